// The issue notes panel of the Forge Remote manifests (forge/manifest.yml and its Connect-on-Forge
// variant). Every call goes to the server through invokeRemote (the manifest's `notes-ui`
// endpoint): Forge adds the Forge Invocation Token, whose `context.extension.issue.key` limits the
// call to this issue, and the user's and the app's tokens. invokeRemote answers `{status, headers,
// body}`, what the panel expects.
import { invokeRemote } from '@forge/bridge';
import { renderPanel } from './panel';

renderPanel(invokeRemote);
