//! A fake of the Atlassian APIs a Forge remote calls with its system token, on loopback: Forge
//! hosted storage (the key-value store, secrets and custom entities of each installation, in
//! memory) and the GraphQL mutation of offline user impersonation. It knows the system tokens it
//! issued ([`FakeForgeApi::system_token`]), answers any other 401, and records every call.
//!
//! ```no_run
//! use connect_axum::auth::ForgeToken;
//! use connect_axum::forge::storage::{ForgeStorage, SetOptions};
//! use connect_axum_testing::FakeForgeApi;
//! use std::time::Duration;
//!
//! # async fn test() {
//! let api = FakeForgeApi::start().await;
//! let token = ForgeToken::new(api.system_token("installation-1"));
//! let storage = ForgeStorage::new(&api.base_url().parse().unwrap(), Duration::from_secs(5));
//! storage.for_installation(&token).set("k", &1, SetOptions::default()).await.unwrap();
//! assert_eq!(api.stored("installation-1", "k"), Some(serde_json::json!(1)));
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use entities::{Index, entity_key, entity_query, entity_set};
pub use kvs::{DEFAULT_QUERY_LIMIT, KEY_EXISTS_CODE};
use kvs::{Stored, delete, get, query, set};

mod entities;
mod kvs;

/// The mutation of offline user impersonation as Atlassian documents it; the fake answers no
/// other query (whitespace aside).
pub const OFFLINE_USER_AUTH_TOKEN_MUTATION: &str = "mutation forge_remote_offlineUserAuthToken($input: OfflineUserAuthTokenInput!) { offlineUserAuthToken(input: $input) { success errors { message } authToken { token ttl } } }";

/// The `ttl` (seconds) of the user tokens the fake grants unless told otherwise.
pub const DEFAULT_IMPERSONATION_TTL_SECS: u64 = 3600;

/// An impersonation request the fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct Impersonation {
    /// The installation of the system token it came with; `None` when the token was refused.
    pub installation_id: Option<String>,
    /// `variables.input.userId`.
    pub account_id: Option<String>,
    /// `variables.input.contextIds`.
    pub context_ids: Vec<String>,
}

/// A storage call the fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageCall {
    /// The operation: `get`, `secret/set`, `entity/query`, …
    pub op: String,
    /// The installation of the system token it came with; `None` when the token was refused.
    pub installation_id: Option<String>,
    /// The JSON body (null when it was not JSON).
    pub body: Value,
}

#[derive(Default)]
struct Installation {
    kvs: BTreeMap<String, Stored>,
    secrets: BTreeMap<String, Stored>,
    entities: BTreeMap<(String, String), Stored>,
}

struct Knobs {
    /// System token → its installation.
    tokens: HashMap<String, String>,
    issued: usize,
    refusals: HashMap<String, String>,
    impersonation_ttl: u64,
    impersonation_delay: Duration,
    impersonations: Vec<Impersonation>,
    /// Every user token issued, with its account id.
    user_tokens: Vec<(String, String)>,
    storage: Vec<StorageCall>,
    rate_limited: (usize, Option<Duration>),
    not_found: (StatusCode, String),
    indexes: HashMap<(String, String), Index>,
    data: HashMap<String, Installation>,
}

struct Shared {
    base_url: String,
    knobs: Mutex<Knobs>,
}

impl Shared {
    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs.lock().expect("not poisoned")
    }
}

/// Atlassian's platform API (`https://api.atlassian.com`) as a Forge remote sees it: storage
/// under `/forge/storage/kvs/v1/{op}` and impersonation at `/graphql`, for the installations
/// whose system tokens it issued.
#[derive(Clone)]
pub struct FakeForgeApi {
    shared: Arc<Shared>,
}

impl FakeForgeApi {
    /// Listens on a free loopback port; user tokens live [`DEFAULT_IMPERSONATION_TTL_SECS`],
    /// absent keys are answered 404 `KEY_NOT_FOUND`.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base_url = format!("http://{}", listener.local_addr().expect("bound"));
        let shared = Arc::new(Shared {
            base_url,
            knobs: Mutex::new(Knobs {
                tokens: HashMap::new(),
                issued: 0,
                refusals: HashMap::new(),
                impersonation_ttl: DEFAULT_IMPERSONATION_TTL_SECS,
                impersonation_delay: Duration::ZERO,
                impersonations: Vec::new(),
                user_tokens: Vec::new(),
                storage: Vec::new(),
                rate_limited: (0, None),
                not_found: (StatusCode::NOT_FOUND, "KEY_NOT_FOUND".to_owned()),
                indexes: HashMap::new(),
                data: HashMap::new(),
            }),
        });
        let router = Router::new()
            .route("/graphql", post(graphql))
            .route("/forge/storage/kvs/v1/{*op}", post(storage))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { shared }
    }

    /// Serves the storage operation `op` (`get`, `entity/set`, …) for `installation_id`, as the
    /// route does for a caller holding one of its system tokens: Forge's egress proxy does this
    /// for a container, whose calls carry no token.
    pub(crate) fn storage_for(&self, installation_id: &str, op: &str, body: &[u8]) -> Response {
        storage_of(&self.shared, Some(installation_id.to_owned()), op, body)
    }

    /// The API's base URL, `http://127.0.0.1:<port>` (the storage client's API base).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The GraphQL endpoint, `{base_url}/graphql`.
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.shared.base_url)
    }

    /// A new system token of the installation `installation_id`; every token issued stays
    /// valid.
    pub fn system_token(&self, installation_id: &str) -> String {
        let mut knobs = self.shared.knobs();
        knobs.issued += 1;
        let token = format!("fake-system-token-{}", knobs.issued);
        knobs
            .tokens
            .insert(token.clone(), installation_id.to_owned());
        token
    }

    /// Refuses to impersonate `account_id` (`success: false` with `message`, in a 200).
    pub fn refuse_impersonation(&self, account_id: &str, message: &str) {
        self.shared
            .knobs()
            .refusals
            .insert(account_id.to_owned(), message.to_owned());
    }

    /// Impersonates `account_id` again after [`refuse_impersonation`](Self::refuse_impersonation).
    pub fn allow_impersonation(&self, account_id: &str) {
        self.shared.knobs().refusals.remove(account_id);
    }

    /// The `ttl` of user tokens granted from now on, in seconds.
    pub fn impersonation_ttl(&self, secs: u64) {
        self.shared.knobs().impersonation_ttl = secs;
    }

    /// Answers impersonation requests only after `delay` (to have several in flight at once).
    pub fn delay_impersonation(&self, delay: Duration) {
        self.shared.knobs().impersonation_delay = delay;
    }

    /// How many GraphQL requests the fake received, refused ones included.
    pub fn impersonations(&self) -> usize {
        self.shared.knobs().impersonations.len()
    }

    /// The user tokens issued so far, each with its account id, in order.
    pub fn issued_user_tokens(&self) -> Vec<(String, String)> {
        self.shared.knobs().user_tokens.clone()
    }

    /// Every GraphQL request the fake received, in order.
    pub fn impersonation_requests(&self) -> Vec<Impersonation> {
        self.shared.knobs().impersonations.clone()
    }

    /// Answers the next `n` authenticated calls (storage or GraphQL) 429 `RATE_LIMIT_EXCEEDED`,
    /// with `Retry-After` in whole seconds if given.
    pub fn rate_limit_next(&self, n: usize, retry_after: Option<Duration>) {
        self.shared.knobs().rate_limited = (n, retry_after);
    }

    /// Answers a `get` of an absent key with `status` and `code` from now on (Atlassian's
    /// reference says 400 `NOT_FOUND`, `@forge/kvs` expects `KEY_NOT_FOUND`).
    pub fn answer_absent_keys(&self, status: StatusCode, code: &str) {
        self.shared.knobs().not_found = (status, code.to_owned());
    }

    /// Declares the index `index` of the custom entity `entity`, as a manifest does: its
    /// `partition` attributes and its `range` attribute. Queries of undeclared indexes are
    /// answered 400 `INDEX_NOT_DEFINED`.
    pub fn define_index(&self, entity: &str, index: &str, partition: &[&str], range: &str) {
        self.shared.knobs().indexes.insert(
            (entity.to_owned(), index.to_owned()),
            Index {
                partition: partition.iter().map(|p| (*p).to_owned()).collect(),
                range: range.to_owned(),
            },
        );
    }

    /// How many storage calls the fake received, refused ones included.
    pub fn storage_calls(&self) -> usize {
        self.shared.knobs().storage.len()
    }

    /// Every storage call the fake received, in order.
    pub fn storage_requests(&self) -> Vec<StorageCall> {
        self.shared.knobs().storage.clone()
    }

    /// The value the installation holds under `key` (not expired).
    pub fn stored(&self, installation_id: &str, key: &str) -> Option<Value> {
        let knobs = self.shared.knobs();
        let stored = knobs.data.get(installation_id)?.kvs.get(key)?;
        stored.live().then(|| stored.value.clone())
    }

    /// The secret the installation holds under `key` (not expired).
    pub fn stored_secret(&self, installation_id: &str, key: &str) -> Option<Value> {
        let knobs = self.shared.knobs();
        let stored = knobs.data.get(installation_id)?.secrets.get(key)?;
        stored.live().then(|| stored.value.clone())
    }

    /// The entity `entity` the installation holds under `key` (not expired).
    pub fn stored_entity(&self, installation_id: &str, entity: &str, key: &str) -> Option<Value> {
        let knobs = self.shared.knobs();
        let stored = knobs
            .data
            .get(installation_id)?
            .entities
            .get(&(entity.to_owned(), key.to_owned()))?;
        stored.live().then(|| stored.value.clone())
    }
}

impl Knobs {
    /// The installation of the request's system token.
    fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        self.tokens.get(token).cloned()
    }

    fn rate_limited(&mut self) -> Option<Response> {
        if self.rate_limited.0 == 0 {
            return None;
        }
        self.rate_limited.0 -= 1;
        let mut response = failure(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMIT_EXCEEDED",
            "rate limit exceeded",
        );
        if let Some(after) = self.rate_limited.1 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        Some(response)
    }
}

/// An error as the platform API answers it: `{"code", "message"}`.
fn failure(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn unauthorized() -> Response {
    failure(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "unknown or missing system token",
    )
}

async fn graphql(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (delay, response) = {
        let mut knobs = shared.knobs();
        let installation = knobs.authenticate(&headers);
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let input = &request["variables"]["input"];
        let call = Impersonation {
            installation_id: installation.clone(),
            account_id: input["userId"].as_str().map(str::to_owned),
            context_ids: input["contextIds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
        };
        knobs.impersonations.push(call.clone());
        if installation.is_none() {
            return unauthorized();
        }
        if let Some(response) = knobs.rate_limited() {
            return response;
        }
        let normalized = |q: &str| q.split_whitespace().collect::<Vec<_>>().join(" ");
        if request["query"].as_str().map(normalized)
            != Some(normalized(OFFLINE_USER_AUTH_TOKEN_MUTATION))
        {
            let errors =
                json!({ "errors": [{ "message": "the fake knows only offlineUserAuthToken" }] });
            return axum::Json(errors).into_response();
        }
        let refusal = match &call.account_id {
            None => Some("userId is required".to_owned()),
            Some(_) if call.context_ids.is_empty() => Some("contextIds is required".to_owned()),
            Some(account_id) => knobs.refusals.get(account_id).cloned(),
        };
        let payload = match refusal {
            Some(message) => json!({
                "success": false,
                "errors": [{ "message": message }],
                "authToken": null,
            }),
            None => {
                knobs.issued += 1;
                let token = format!("fake-user-token-{}", knobs.issued);
                let account_id = call.account_id.clone().unwrap_or_default();
                knobs.user_tokens.push((account_id, token.clone()));
                json!({
                    "success": true,
                    "errors": null,
                    "authToken": {
                        "token": token,
                        "ttl": knobs.impersonation_ttl,
                    },
                })
            }
        };
        let answer = json!({ "data": { "offlineUserAuthToken": payload } });
        (
            knobs.impersonation_delay,
            axum::Json(answer).into_response(),
        )
    };
    tokio::time::sleep(delay).await;
    response
}

async fn storage(
    State(shared): State<Arc<Shared>>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let installation = shared.knobs().authenticate(&headers);
    storage_of(&shared, installation, &op, &body)
}

/// One storage operation `op` for `installation` (`None`: the caller was not recognised).
fn storage_of(shared: &Shared, installation: Option<String>, op: &str, body: &[u8]) -> Response {
    let mut knobs = shared.knobs();
    let op = op.to_owned();
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    knobs.storage.push(StorageCall {
        op: op.clone(),
        installation_id: installation.clone(),
        body: body.clone(),
    });
    let Some(installation) = installation else {
        return unauthorized();
    };
    if let Some(response) = knobs.rate_limited() {
        return response;
    }
    let Knobs {
        data,
        indexes,
        not_found,
        ..
    } = &mut *knobs;
    let data = data.entry(installation).or_default();
    let absent = || (not_found.0, not_found.1.clone(), "no such key".to_owned());
    let result = match op.as_str() {
        "get" => get(&data.kvs, &body).unwrap_or_else(|| Err(absent())),
        "set" => set(&mut data.kvs, &body),
        "delete" => delete(&mut data.kvs, &body),
        "query" => query(&data.kvs, &body),
        "secret/get" => get(&data.secrets, &body).unwrap_or_else(|| Err(absent())),
        "secret/set" => set(&mut data.secrets, &body),
        "secret/delete" => delete(&mut data.secrets, &body),
        "entity/get" => entity_key(&body).and_then(|(entity, key)| {
            let stored = data.entities.get(&(entity.clone(), key.clone()));
            match stored.filter(|s| s.live()) {
                Some(s) => Ok(Some(
                    json!({ "key": key, "value": s.value, "entityName": entity }),
                )),
                None => Err(absent()),
            }
        }),
        "entity/set" => entity_set(&mut data.entities, &body),
        "entity/delete" => entity_key(&body).map(|k| {
            data.entities.remove(&k);
            None
        }),
        "entity/query" => entity_query(&data.entities, indexes, &body),
        _ => Err((
            StatusCode::NOT_FOUND,
            "NO_SUCH_OPERATION".to_owned(),
            format!("no operation {op}"),
        )),
    };
    match result {
        Ok(Some(answer)) => axum::Json(answer).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err((status, code, message)) => failure(status, &code, &message),
    }
}
