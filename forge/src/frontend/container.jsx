// The issue notes panel of the Forge Container manifest (forge/container/manifest.yml). Every call
// goes to the container through invokeService (the manifest's `notes-ui` endpoint): Forge's
// sidecar checks the invocation and forwards it with its `x-forge-invocation-id`, whose context
// limits the call to this issue.
import { invokeService } from '@forge/bridge';
import { renderPanel } from './panel';

// invokeService does not answer as invokeRemote does: @forge/bridge 7.2.0 types its answer as the
// body itself, or `{body, metadata}`, and Atlassian's page on it says a 4xx or 5xx resolves as
// `{headers, error, status}`. Unconfirmed on a live site: this is the one place to change.
const sendToService = async (request) => {
  const answer = await invokeService(request);
  if (answer === null || typeof answer !== 'object') {
    return { status: 200, body: answer };
  }
  if (typeof answer.status === 'number') {
    return { status: answer.status, body: answer.body ?? answer.error };
  }
  if ('metadata' in answer && 'body' in answer) {
    return { status: 200, body: answer.body };
  }
  return { status: 200, body: answer };
};

renderPanel(sendToService);
