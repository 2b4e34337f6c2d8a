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

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The mutation of offline user impersonation as Atlassian documents it; the fake answers no
/// other query (whitespace aside).
pub const OFFLINE_USER_AUTH_TOKEN_MUTATION: &str = "mutation forge_remote_offlineUserAuthToken($input: OfflineUserAuthTokenInput!) { offlineUserAuthToken(input: $input) { success errors { message } authToken { token ttl } } }";

/// The `ttl` (seconds) of the user tokens the fake grants unless told otherwise.
pub const DEFAULT_IMPERSONATION_TTL_SECS: u64 = 3600;

/// The code the fake answers a `set` with `keyPolicy: FAIL_IF_EXISTS` on an existing key (with
/// 409): Atlassian documents none.
pub const KEY_EXISTS_CODE: &str = "KEY_ALREADY_EXISTS";

/// The entries of a query page when the query names no `limit`.
pub const DEFAULT_QUERY_LIMIT: usize = 10;

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

#[derive(Clone)]
struct Stored {
    value: Value,
    expires: Option<Instant>,
}

impl Stored {
    fn live(&self) -> bool {
        self.expires.is_none_or(|at| at > Instant::now())
    }
}

#[derive(Default)]
struct Installation {
    kvs: BTreeMap<String, Stored>,
    secrets: BTreeMap<String, Stored>,
    entities: BTreeMap<(String, String), Stored>,
}

struct Index {
    partition: Vec<String>,
    range: String,
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

/// Why the fake refuses an operation: status, code, message.
type Refusal = (StatusCode, String, String);

fn bad(code: &str, message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, code.to_owned(), message.into())
}

async fn storage(
    State(shared): State<Arc<Shared>>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut knobs = shared.knobs();
    let installation = knobs.authenticate(&headers);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
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

/// `body.key`, checked as Forge checks keys.
fn key(body: &Value) -> Result<String, Refusal> {
    let Some(key) = body["key"].as_str() else {
        return Err(bad("INVALID_KEY", "key is required"));
    };
    let chars = key.chars().count();
    if chars == 0 {
        return Err(bad("KEY_TOO_SHORT", "the key is empty"));
    }
    if chars > 500 {
        return Err(bad("KEY_TOO_LONG", "the key is over 500 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":._-#".contains(c) || c.is_whitespace();
    if !key.chars().all(allowed) || key.chars().all(char::is_whitespace) {
        return Err(bad("INVALID_KEY", "the key has characters Forge refuses"));
    }
    Ok(key.to_owned())
}

/// `{key, value}` of a live key.
fn get(store: &BTreeMap<String, Stored>, body: &Value) -> Option<Result<Option<Value>, Refusal>> {
    let key = match key(body) {
        Ok(key) => key,
        Err(refusal) => return Some(Err(refusal)),
    };
    let stored = store.get(&key).filter(|s| s.live())?;
    Some(Ok(Some(json!({ "key": key, "value": stored.value }))))
}

/// `body.options` as stored: the expiry of its `ttl`, after checking its `keyPolicy`.
fn stored_value(body: &Value, exists: bool) -> Result<Stored, Refusal> {
    let Some(value) = body.get("value").filter(|v| !v.is_null()) else {
        return Err(bad("INVALID_VALUE", "value is required"));
    };
    let options = &body["options"];
    match options["keyPolicy"].as_str() {
        None | Some("OVERRIDE") => {}
        Some("FAIL_IF_EXISTS") if exists => {
            return Err((
                StatusCode::CONFLICT,
                KEY_EXISTS_CODE.to_owned(),
                "the key exists".to_owned(),
            ));
        }
        Some("FAIL_IF_EXISTS") => {}
        Some(_) => return Err(bad("INVALID_KEY_POLICY", "unknown keyPolicy")),
    }
    let expires = match options.get("ttl") {
        None => None,
        Some(ttl) => {
            let unit = match ttl["unit"].as_str() {
                Some("SECONDS") => 1,
                Some("MINUTES") => 60,
                Some("HOURS") => 3600,
                Some("DAYS") => 86_400,
                _ => return Err(bad("INVALID_TTL", "unknown ttl unit")),
            };
            let Some(n) = ttl["value"].as_u64().filter(|n| *n > 0) else {
                return Err(bad("INVALID_TTL", "ttl value must be a positive integer"));
            };
            Some(Instant::now() + Duration::from_secs(n * unit))
        }
    };
    Ok(Stored {
        value: value.clone(),
        expires,
    })
}

fn set(store: &mut BTreeMap<String, Stored>, body: &Value) -> Result<Option<Value>, Refusal> {
    let key = key(body)?;
    let exists = store.get(&key).is_some_and(Stored::live);
    let stored = stored_value(body, exists)?;
    store.insert(key, stored);
    Ok(None)
}

fn delete(store: &mut BTreeMap<String, Stored>, body: &Value) -> Result<Option<Value>, Refusal> {
    store.remove(&key(body)?);
    Ok(None)
}

/// The `limit` of a query, 1 to 100.
fn limit(body: &Value) -> Result<usize, Refusal> {
    match body.get("limit") {
        None => Ok(DEFAULT_QUERY_LIMIT),
        Some(limit) => match limit.as_u64() {
            Some(n @ 1..=100) => Ok(n as usize),
            _ => Err(bad(
                "LIST_QUERY_LIMIT_EXCEEDED",
                "limit must be between 1 and 100",
            )),
        },
    }
}

/// A page of keys in order, by `BEGINS_WITH` on the key; the cursor is the last key returned.
fn query(store: &BTreeMap<String, Stored>, body: &Value) -> Result<Option<Value>, Refusal> {
    let prefix = match body.get("where") {
        None => "",
        Some(Value::Array(conditions)) => match conditions.as_slice() {
            [c] if c["property"] == "key" && c["condition"] == "BEGINS_WITH" => {
                match c["values"].as_array().map(Vec::as_slice) {
                    Some([Value::String(prefix)]) => prefix.as_str(),
                    _ => return Err(bad("QUERY_WHERE_INVALID", "one prefix is required")),
                }
            }
            _ => return Err(bad("QUERY_WHERE_INVALID", "one BEGINS_WITH on key only")),
        },
        Some(_) => return Err(bad("QUERY_WHERE_INVALID", "where must be a list")),
    };
    let limit = limit(body)?;
    let after = match body.get("after") {
        None => None,
        Some(cursor) => match cursor.as_str().and_then(|c| c.strip_prefix("after:")) {
            Some(key) => Some(key.to_owned()),
            None => return Err(bad("INVALID_CURSOR", "not a cursor of this store")),
        },
    };
    let mut matching = store
        .iter()
        .filter(|(k, s)| k.starts_with(prefix) && s.live())
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k.as_str() > a.as_str()));
    let page: Vec<_> = matching.by_ref().take(limit).collect();
    let more = matching.next().is_some();
    let mut answer = json!({
        "data": page.iter().map(|(k, s)| json!({ "key": k, "value": s.value })).collect::<Vec<_>>(),
    });
    if let (true, Some((last, _))) = (more, page.last()) {
        answer["cursor"] = format!("after:{last}").into();
    }
    Ok(Some(answer))
}

fn entity_key(body: &Value) -> Result<(String, String), Refusal> {
    let Some(entity) = body["entityName"].as_str().filter(|e| !e.is_empty()) else {
        return Err(bad("INVALID_ENTITY_NAME", "entityName is required"));
    };
    Ok((entity.to_owned(), key(body)?))
}

fn entity_set(
    entities: &mut BTreeMap<(String, String), Stored>,
    body: &Value,
) -> Result<Option<Value>, Refusal> {
    let at = entity_key(body)?;
    if !body["value"].is_object() {
        return Err(bad("INVALID_VALUE", "an entity value is an object"));
    }
    let exists = entities.get(&at).is_some_and(Stored::live);
    let stored = stored_value(body, exists)?;
    entities.insert(at, stored);
    Ok(None)
}

/// Orders JSON numbers and strings; anything else is unordered.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Whether `actual` (absent: `None`) meets `condition` with `values`.
fn meets(actual: Option<&Value>, condition: &Value, values: &Value) -> Result<bool, Refusal> {
    let values = values.as_array().map(Vec::as_slice).unwrap_or_default();
    let first = || {
        values
            .first()
            .ok_or_else(|| bad("INVALID_CONDITION", "the condition needs a value"))
    };
    let ordered = |want: &[Ordering]| -> Result<bool, Refusal> {
        let v = first()?;
        Ok(actual
            .and_then(|a| compare(a, v))
            .is_some_and(|o| want.contains(&o)))
    };
    let contains = |a: &Value, v: &Value| match (a, v) {
        (Value::String(a), Value::String(v)) => a.contains(v.as_str()),
        (Value::Array(a), v) => a.contains(v),
        _ => false,
    };
    use Ordering::{Equal, Greater, Less};
    Ok(match condition.as_str().unwrap_or_default() {
        "EXISTS" => actual.is_some(),
        "NOT_EXISTS" => actual.is_none(),
        "EQUAL_TO" => actual == Some(first()?),
        "NOT_EQUAL_TO" => actual != Some(first()?),
        "BEGINS_WITH" => {
            let v = first()?;
            matches!((actual, v), (Some(Value::String(a)), Value::String(v)) if a.starts_with(v.as_str()))
        }
        "CONTAINS" => {
            let v = first()?;
            actual.is_some_and(|a| contains(a, v))
        }
        "NOT_CONTAINS" => {
            let v = first()?;
            !actual.is_some_and(|a| contains(a, v))
        }
        "GREATER_THAN" => ordered(&[Greater])?,
        "GREATER_THAN_EQUAL_TO" => ordered(&[Greater, Equal])?,
        "LESS_THAN" => ordered(&[Less])?,
        "LESS_THAN_EQUAL_TO" => ordered(&[Less, Equal])?,
        "BETWEEN" => {
            let [low, high] = values else {
                return Err(bad("INVALID_CONDITION", "BETWEEN needs two values"));
            };
            actual.is_some_and(|a| {
                compare(a, low).is_some_and(|o| o != Less)
                    && compare(a, high).is_some_and(|o| o != Greater)
            })
        }
        other => {
            return Err(bad(
                "INVALID_CONDITION",
                format!("unknown condition {other}"),
            ));
        }
    })
}

/// Entities of a declared index's partition, by its range and filters, sorted by the range
/// attribute (then key); the cursor is the offset of the next page.
fn entity_query(
    entities: &BTreeMap<(String, String), Stored>,
    indexes: &HashMap<(String, String), Index>,
    body: &Value,
) -> Result<Option<Value>, Refusal> {
    let entity = body["entityName"].as_str().unwrap_or_default().to_owned();
    let index_name = body["indexName"].as_str().unwrap_or_default().to_owned();
    let Some(index) = indexes.get(&(entity.clone(), index_name)) else {
        return Err(bad("INDEX_NOT_DEFINED", "no such index on the entity"));
    };
    let partition = body["partition"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if partition.len() != index.partition.len() {
        return Err(bad(
            "INVALID_PARTITION",
            "the partition must give each partition attribute",
        ));
    }
    let limit = limit(body)?;
    let offset = match body.get("cursor") {
        None => 0,
        Some(cursor) => match cursor
            .as_str()
            .and_then(|c| c.strip_prefix("offset:"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Err(bad("INVALID_CURSOR", "not a cursor of this store")),
        },
    };
    let filters: Vec<&Value>;
    let any = match &body.get("filters") {
        None => {
            filters = Vec::new();
            false
        }
        Some(f) => match (f["and"].as_array(), f["or"].as_array()) {
            (Some(and), None) => {
                filters = and.iter().collect();
                false
            }
            (None, Some(or)) => {
                filters = or.iter().collect();
                true
            }
            _ => {
                return Err(bad(
                    "INVALID_FILTERS",
                    "filters are {and: […]} or {or: […]}",
                ));
            }
        },
    };
    let mut rows = Vec::new();
    for ((e, key), stored) in entities {
        if *e != entity || !stored.live() {
            continue;
        }
        let value = &stored.value;
        if !index
            .partition
            .iter()
            .zip(partition)
            .all(|(attribute, want)| value.get(attribute) == Some(want))
        {
            continue;
        }
        if let Some(range) = body.get("range")
            && !meets(
                value.get(&index.range),
                &range["condition"],
                &range["values"],
            )?
        {
            continue;
        }
        if !filters.is_empty() {
            let mut passed = Vec::new();
            for f in &filters {
                let property = f["property"].as_str().unwrap_or_default();
                passed.push(meets(value.get(property), &f["condition"], &f["values"])?);
            }
            let pass = if any {
                passed.contains(&true)
            } else {
                !passed.contains(&false)
            };
            if !pass {
                continue;
            }
        }
        rows.push((key, value));
    }
    rows.sort_by(|(ka, a), (kb, b)| {
        let by_range = match (a.get(&index.range), b.get(&index.range)) {
            (Some(a), Some(b)) => compare(a, b).unwrap_or(Ordering::Equal),
            (a, b) => a.is_some().cmp(&b.is_some()),
        };
        by_range.then_with(|| ka.cmp(kb))
    });
    match body["sort"].as_str() {
        None | Some("ASC") => {}
        Some("DESC") => rows.reverse(),
        Some(_) => return Err(bad("INVALID_SORT", "sort is ASC or DESC")),
    }
    let page: Vec<_> = rows.iter().skip(offset).take(limit).collect();
    let mut answer = json!({
        "data": page.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
    });
    if offset + page.len() < rows.len() {
        answer["cursor"] = format!("offset:{}", offset + page.len()).into();
    }
    Ok(Some(answer))
}
