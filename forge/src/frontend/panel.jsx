// The issue notes panel in UI Kit, for every manifest of the sample: each entry (index.jsx for a
// Forge Remote, container.jsx for a Forge Container) gives it the call that reaches the server.
// The paths are the sample's Forge routes (src/lib.rs `forge_router`); tests/manifest.rs checks
// them.
import React, { useCallback, useEffect, useState } from 'react';
import ForgeReconciler, {
  Button,
  Inline,
  Label,
  SectionMessage,
  Spinner,
  Stack,
  Text,
  TextArea,
} from '@forge/react';
import { view } from '@forge/bridge';

// The server's MAX_NOTE_CHARS.
const MAX_NOTE_CHARS = 10000;

const notesPath = (issueKey) => `/forge/api/issues/${encodeURIComponent(issueKey)}/notes`;
// A page of the list: up to 100 notes after `cursor` (the `next` of the page before, if any).
const notesPagePath = (issueKey, cursor) =>
  `/forge/api/issues/${encodeURIComponent(issueKey)}/notes?limit=100` +
  (cursor ? `&cursor=${encodeURIComponent(cursor)}` : '');
const notePath = (issueKey, id) =>
  `/forge/api/issues/${encodeURIComponent(issueKey)}/notes/${encodeURIComponent(id)}`;

// The entry's call: `({method, path, headers?, body?})` to `{status, body}`.
let send = null;

// Sends one call to the server and gives back the answer's body; a refusal becomes an Error whose
// message is the server's `{error, message}` body.
async function callServer(method, path, body) {
  const request = { method, path };
  if (body !== undefined) {
    request.headers = { 'content-type': 'application/json' };
    request.body = body;
  }
  const response = await send(request);
  if (response.status >= 200 && response.status < 300) {
    return response.body;
  }
  const problem = response.body ?? {};
  const reason = problem.error ? ` (${problem.error})` : '';
  throw new Error(`${problem.message ?? `the server answered ${response.status}`}${reason}`);
}

const describe = (error) => (error instanceof Error ? error.message : String(error));

function NotesPanel() {
  const [issueKey, setIssueKey] = useState(null);
  const [accountId, setAccountId] = useState(null);
  const [notes, setNotes] = useState(null);
  const [draft, setDraft] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);

  const loadNotes = useCallback(async (key) => {
    try {
      // The list comes in pages; the server caps an issue's notes, so there are few.
      const all = [];
      let cursor = null;
      do {
        const page = await callServer('GET', notesPagePath(key, cursor));
        all.push(...page.notes);
        cursor = page.next;
      } while (cursor);
      setNotes(all);
      setError(null);
    } catch (e) {
      setError(describe(e));
    }
  }, []);

  useEffect(() => {
    view
      .getContext()
      .then((context) => {
        const key = context.extension?.issue?.key;
        if (!key) {
          setError('this panel has no issue to keep notes on');
          return;
        }
        setIssueKey(key);
        setAccountId(context.accountId ?? null);
        return loadNotes(key);
      })
      .catch((e) => setError(describe(e)));
  }, [loadNotes]);

  const addNote = async () => {
    setBusy(true);
    try {
      const note = await callServer('POST', notesPath(issueKey), { body: draft });
      setNotes((current) => [...(current ?? []), note]);
      setDraft('');
      setError(null);
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };

  const deleteNote = async (id) => {
    setBusy(true);
    try {
      await callServer('DELETE', notePath(issueKey, id));
      setNotes((current) => (current ?? []).filter((note) => note.id !== id));
      setError(null);
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };

  const tooLong = [...draft].length > MAX_NOTE_CHARS;

  return (
    <Stack space="space.200">
      {error && (
        <SectionMessage appearance="error" title="Notes">
          <Text>{error}</Text>
        </SectionMessage>
      )}
      {notes === null && !error && <Spinner label="Loading notes" />}
      {notes !== null && notes.length === 0 && <Text>No notes on {issueKey} yet.</Text>}
      {notes !== null &&
        notes.map((note) => (
          <Inline key={note.id} space="space.100" alignBlock="center" spread="space-between">
            <Text>{note.body}</Text>
            {note.author === accountId && (
              <Button appearance="subtle" isDisabled={busy} onClick={() => deleteNote(note.id)}>
                Delete
              </Button>
            )}
          </Inline>
        ))}
      {issueKey && (
        <Stack space="space.100">
          <Label labelFor="new-note">New note</Label>
          <TextArea
            id="new-note"
            value={draft}
            maxLength={MAX_NOTE_CHARS}
            isDisabled={busy}
            onChange={(event) => setDraft(event.target.value ?? '')}
          />
          <Inline>
            <Button
              appearance="primary"
              isDisabled={busy || draft.trim() === '' || tooLong}
              onClick={addNote}
            >
              Add note
            </Button>
          </Inline>
        </Stack>
      )}
    </Stack>
  );
}

// Renders the panel; `transport` sends each of its calls (see `send`).
export function renderPanel(transport) {
  send = transport;
  ForgeReconciler.render(
    <React.StrictMode>
      <NotesPanel />
    </React.StrictMode>,
  );
}
