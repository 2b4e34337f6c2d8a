//! The issue panel: the page Jira shows in an iframe beside an issue.

use axum::extract::State;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};
use serde::Deserialize;

use super::IssueKey;
use connect_axum::app::AppState;
use connect_axum::auth::Tenant;
use connect_axum::error::{QueryParams, Result};

/// The query Jira sends: `issueKey={issue.key}` (plus its own parameters and the `jwt`).
#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(rename = "issueKey")]
    pub issue_key: String,
}

/// `GET /issue-notes?issueKey=…`: the notes panel, with a session token for its API calls on
/// that issue only (the page's JWT covers `issueKey` by its qsh).
pub(crate) async fn issue_notes(
    tenant: Tenant,
    State(app): State<AppState>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response> {
    let issue_key = IssueKey::parse(&query.issue_key)?;
    let nonce = STANDARD_NO_PAD.encode(rand::random::<[u8; 16]>());
    let installation = &tenant.record().installation;
    let product = product_origins(&installation.base_url, installation.display_url.as_deref());
    let api = format!(
        "{}/api/issues/{}/notes",
        app.config().server.base_url.path().trim_end_matches('/'),
        issue_key.as_str()
    );
    let token = app
        .auth()
        .session_token_for_issue(&tenant, issue_key.as_str())?;
    let html = render(&Page {
        issue_key: issue_key.as_str(),
        api: &api,
        token: &token,
        account: tenant.account_id().unwrap_or_default(),
        all_js: &format!("{}/atlassian-connect/all.js", product[0]),
        nonce: &nonce,
    });
    // The page may be framed by the tenant's site only; the only script is ours (by nonce) and
    // the product's all.js; the URL carries a JWT, so it is never sent on as a referrer.
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}' {sites}; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors {sites}",
        sites = product.join(" ")
    );
    Ok((
        [
            (CONTENT_SECURITY_POLICY, csp),
            (REFERRER_POLICY, "no-referrer".to_owned()),
            (X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (CACHE_CONTROL, "no-store".to_owned()),
        ],
        Html(html),
    )
        .into_response())
}

/// `GET /icon.svg`: the panel's icon in the issue view.
pub(crate) async fn icon() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "image/svg+xml"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        ICON,
    )
}

const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24"><path fill="#0052cc" d="M5 3h10l4 4v14H5z"/><path fill="#fff" d="M8 10h8v1.5H8zm0 3h8v1.5H8zm0 3h5v1.5H8z"/></svg>"##;

/// The origins the tenant's site is served from: its baseUrl, and its custom domain if any.
///
/// Both are checked at install; a URL that is not a plain site origin (stored before that check,
/// say) is left out rather than written into the Content-Security-Policy.
fn product_origins(base_url: &str, display_url: Option<&str>) -> Vec<String> {
    let mut origins: Vec<String> = [Some(base_url), display_url]
        .into_iter()
        .flatten()
        .filter_map(|u| url::Url::parse(u).ok())
        .filter_map(|u| connect_axum::lifecycle::site_origin(&u))
        .collect();
    origins.dedup();
    if origins.is_empty() {
        origins.push("'none'".to_owned());
    }
    origins
}

struct Page<'a> {
    issue_key: &'a str,
    api: &'a str,
    token: &'a str,
    account: &'a str,
    all_js: &'a str,
    nonce: &'a str,
}

fn render(p: &Page<'_>) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Notes on {issue_text}</title>
<script src="{all_js}" data-options="sizeToParent:false"></script>
<style nonce="{nonce}">
  body {{ font: 14px/1.43 -apple-system, "Segoe UI", Roboto, sans-serif; color: #172b4d; margin: 0; padding: 8px; }}
  h1 {{ font-size: 14px; margin: 0 0 8px; }}
  ul {{ list-style: none; padding: 0; margin: 0 0 12px; }}
  li {{ border-bottom: 1px solid #ebecf0; padding: 6px 0; }}
  li p {{ margin: 0 0 2px; white-space: pre-wrap; overflow-wrap: anywhere; }}
  li small {{ color: #6b778c; margin-right: 8px; }}
  textarea {{ width: 100%; box-sizing: border-box; min-height: 60px; font: inherit; }}
  button {{ font: inherit; }}
  #status {{ color: #6b778c; }}
</style>
</head>
<body>
<main id="notes-app" data-state="loading" data-api="{api}" data-token="{token}" data-account="{account}">
  <h1>Notes on {issue_text}</h1>
  <p id="status" role="status">Loading…</p>
  <ul id="notes"></ul>
  <form id="add-note">
    <label for="note-body">Add a note</label>
    <textarea id="note-body" name="body" required maxlength="10000"></textarea>
    <button type="submit">Add note</button>
  </form>
</main>
<script nonce="{nonce}">{script}</script>
</body>
</html>
"#,
        issue_text = text(p.issue_key),
        all_js = attr(p.all_js),
        nonce = attr(p.nonce),
        api = attr(p.api),
        token = attr(p.token),
        account = attr(p.account),
        script = SCRIPT,
    )
}

/// Lists, adds and deletes notes through the notes API with the session token, keeping the
/// renewed token each answer brings; when a token is refused (the session ran out), it asks the
/// product for a context token once and retries. Only the user's own notes get a delete button.
/// Notes are put in the page as text, never as HTML.
const SCRIPT: &str = r#"
(() => {
  const root = document.getElementById('notes-app');
  const list = document.getElementById('notes');
  const status = document.getElementById('status');
  const form = document.getElementById('add-note');
  const api = root.dataset.api;
  const account = root.dataset.account;

  function send(method, url, body, token) {
    const headers = { Authorization: 'JWT ' + token };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  function contextToken() {
    return new Promise((resolve) => {
      const context = window.AP && window.AP.context;
      if (!context || typeof context.getToken !== 'function') { resolve(null); return; }
      const timer = setTimeout(() => resolve(null), 10000);
      context.getToken((fresh) => { clearTimeout(timer); resolve(fresh || null); });
    });
  }

  async function call(method, url, body) {
    let response = await send(method, url, body, root.dataset.token);
    if (response.status === 401) {
      // Nothing was done with a refused token, so sending again is safe.
      const fresh = await contextToken();
      if (fresh) response = await send(method, url, body, fresh);
    }
    const renewed = response.headers.get('X-acpt');
    if (renewed) root.dataset.token = renewed;
    if (response.status === 401) {
      throw new Error('the session has ended; reload the panel');
    }
    if (!response.ok) {
      let reason = String(response.status);
      try { reason = (await response.json()).message || reason; } catch (_) { /* not JSON */ }
      throw new Error(reason);
    }
    return response.status === 204 ? null : response.json();
  }

  // The list comes in pages (the server caps an issue's notes, so there are few of them).
  async function listAll() {
    const notes = [];
    let cursor = null;
    do {
      const query = '?limit=100' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
      const page = await call('GET', api + query);
      notes.push(...page.notes);
      cursor = page.next;
    } while (cursor);
    return notes;
  }

  function render(notes) {
    list.replaceChildren(...notes.map((note) => {
      const item = document.createElement('li');
      item.className = 'note';
      item.dataset.id = String(note.id);
      const body = document.createElement('p');
      body.className = 'body';
      body.textContent = note.body;
      const meta = document.createElement('small');
      meta.textContent = new Date(note.createdAt).toLocaleString() + (note.author ? ' · ' + note.author : '');
      item.append(body, meta);
      if (account && note.author === account) {
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.className = 'delete';
        remove.textContent = 'Delete';
        remove.addEventListener('click', () => act(() => call('DELETE', api + '/' + note.id)));
        item.append(remove);
      }
      return item;
    }));
    status.textContent = notes.length === 0 ? 'No notes yet.'
      : notes.length + (notes.length === 1 ? ' note' : ' notes');
    root.dataset.state = 'ready';
    if (window.AP && typeof window.AP.resize === 'function') window.AP.resize();
  }

  async function act(change) {
    try {
      await change();
      render(await listAll());
    } catch (error) {
      status.textContent = 'Something went wrong: ' + error.message;
      root.dataset.state = 'error';
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const body = form.elements.body.value;
    act(async () => { await call('POST', api, { body }); form.reset(); });
  });

  act(async () => {});
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_printed_is_escaped() {
        let html = render(&Page {
            issue_key: "<b>&",
            api: "\"><script>",
            token: "a\"b",
            account: "557058:\"x",
            all_js: "https://x/\"y",
            nonce: "n",
        });
        assert!(html.contains("Notes on &lt;b&gt;&amp;"));
        assert!(!html.contains("\"><script>"));
        assert!(html.contains("data-token=\"a&quot;b\""));
        assert!(html.contains("data-account=\"557058:&quot;x\""));
    }

    #[test]
    fn framing_is_allowed_for_the_sites_origins_only() {
        assert_eq!(
            product_origins(
                "https://acme.atlassian.net/wiki",
                Some("https://docs.acme.com/")
            ),
            ["https://acme.atlassian.net", "https://docs.acme.com"]
        );
        assert_eq!(
            product_origins(
                "https://acme.atlassian.net",
                Some("https://acme.atlassian.net")
            ),
            ["https://acme.atlassian.net"]
        );
        assert_eq!(product_origins("not a url", None), ["'none'"]);
        for display_url in [
            "https://x.atlassian.net;script-src",
            "https://evil;x.atlassian.net",
            "http://acme.example",
            "https://u:p@acme.example",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                product_origins("https://acme.atlassian.net", Some(display_url)),
                ["https://acme.atlassian.net"],
                "{display_url}"
            );
        }
    }
}
