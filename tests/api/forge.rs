//! Forge Remote: invocation tokens verified with a JWKS served on loopback by keys made here,
//! every way a token can be wrong, key rotation, and one site reached through both doors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router, middleware};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_axum::auth::forge::FIT_ISSUER;
use connect_axum::auth::{self, ForgeInvocation};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::helpers::*;

pub(crate) const APP_ARI: &str = "ari:cloud:ecosystem::app/6f6c7a0e-2b8e-4a47-9d7c-1b2f3c4d5e6f";
pub(crate) const NOTES: &str = "/forge/api/issues/PROJ-1/notes";
const CONNECT_NOTES: &str = "/api/issues/PROJ-1/notes";

/// Two Forge signing keys, made once per test process.
fn keys() -> &'static [RsaPrivateKey; 2] {
    static KEYS: OnceLock<[RsaPrivateKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).unwrap();
        [make(), make()]
    })
}

fn kid(index: usize) -> String {
    format!("forge-key-{index}")
}

/// A JWKS on loopback publishing the keys whose indexes are in `published`.
pub(crate) struct Jwks {
    pub(crate) url: String,
    published: Arc<Mutex<Vec<usize>>>,
    hits: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
}

type JwksState = (Arc<Mutex<Vec<usize>>>, Arc<AtomicUsize>, Arc<AtomicUsize>);

async fn serve_jwks(
    State((published, hits, failures)): State<JwksState>,
) -> Result<Json<Value>, StatusCode> {
    hits.fetch_add(1, Ordering::SeqCst);
    if failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let published = published.lock().unwrap().clone();
    let keys: Vec<Value> = published
        .iter()
        .map(|&i| {
            let public = keys()[i].to_public_key();
            json!({
                "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid(i),
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

impl Jwks {
    pub(crate) async fn start(published: &[usize]) -> Self {
        let published = Arc::new(Mutex::new(published.to_vec()));
        let hits = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state((published.clone(), hits.clone(), failures.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            published,
            hits,
            failures,
        }
    }

    fn publish(&self, published: &[usize]) {
        *self.published.lock().unwrap() = published.to_vec();
    }

    /// Answers the next `n` fetches 503.
    pub(crate) fn fail_next(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn vars(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let url = self.url.clone();
        move |name| match name {
            "FORGE_APP_ID" => Some(APP_ARI.to_owned()),
            "FORGE_JWKS_URL" => Some(url.clone()),
            "FORGE_JWKS_REFRESH_SECS" => Some("1".to_owned()),
            _ => None,
        }
    }
}

/// A Forge Invocation Token for `tenant`'s installation, signed with key `key`, with default
/// claims overridden by `extra` (null removes one). By default it is a user's invocation from an
/// issue panel on PROJ-1.
pub(crate) fn fit(key: usize, tenant: &TestTenant, extra: Value) -> String {
    let mut claims = json!({
        "iss": FIT_ISSUER,
        "aud": APP_ARI,
        "iat": now(),
        "nbf": now(),
        "exp": now() + 25,
        "jti": format!("{:032x}", rand08::random::<u128>()),
        "app": {
            "id": APP_ARI,
            "installationId": tenant.installation_id(),
            "apiBaseUrl": "https://api.atlassian.com/ex/jira/cloud-1",
            "environment": { "type": "DEVELOPMENT", "id": "env-1" },
            "module": { "type": "core:endpoint", "key": "notes-remote" },
        },
        "principal": "557058:forge-user",
        "context": {
            "localId": "panel-1",
            "moduleKey": "notes-panel",
            "extension": {
                "type": "jira:issuePanel",
                "issue": { "key": "PROJ-1", "id": "10000", "type": "Task" },
                "project": { "key": "PROJ", "id": "10000", "type": "software" },
            },
        },
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid(key));
    let pem = keys()[key].to_pkcs8_pem(LineEnding::LF).unwrap();
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub(crate) async fn invoke(
    app: &TestApp,
    method: &str,
    target: &str,
    token: &str,
    body: Option<&Value>,
) -> TestResponse {
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    app.send(request.body(body).unwrap()).await
}

/// Runs each named test, an `async fn name(app: TestApp, jwks: Jwks)` beside the call, once on
/// Postgres and once on SQLite, on an app that trusts a fresh JWKS publishing key 0.
macro_rules! forge_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn postgres() {
                let jwks = $crate::forge::Jwks::start(&[0]).await;
                let app = <$crate::helpers::TestApp as $crate::helpers::SampleApp>::postgres_with(jwks.vars()).await;
                super::$name(app, jwks).await
            }

            #[tokio::test]
            async fn sqlite() {
                let jwks = $crate::forge::Jwks::start(&[0]).await;
                let app = <$crate::helpers::TestApp as $crate::helpers::SampleApp>::sqlite_with(jwks.vars()).await;
                super::$name(app, jwks).await
            }
        }
    )+};
}
pub(crate) use forge_tests;

async fn a_forge_invocation_and_a_connect_jwt_reach_the_same_tenant(app: TestApp, jwks: Jwks) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    let connect = app
        .signed(
            &a,
            "POST",
            CONNECT_NOTES,
            Some(&json!({ "body": "from Connect" })),
        )
        .await;
    assert_eq!(connect.status, StatusCode::CREATED);

    let listed = invoke(&app, "GET", NOTES, &fit(0, &a, json!({})), None).await;
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    assert_eq!(listed.json()[0]["body"], "from Connect");

    let created = invoke(
        &app,
        "POST",
        NOTES,
        &fit(0, &a, json!({})),
        Some(&json!({ "body": "from Forge" })),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["author"], "557058:forge-user");
    let both = app.signed(&a, "GET", CONNECT_NOTES, None).await.json();
    assert_eq!(both.as_array().unwrap().len(), 2);
    assert_eq!(both[1]["body"], "from Forge");

    // Another site's invocation sees none of it.
    assert_eq!(
        invoke(&app, "GET", NOTES, &fit(0, &b, json!({})), None)
            .await
            .json(),
        json!([])
    );
    assert_eq!(jwks.hits(), 1, "the keys are fetched once and kept");
}

async fn bad_invocation_tokens_are_refused_with_401(app: TestApp, jwks: Jwks) {
    let a = app.install("a").await;
    let stranger = TestTenant::new("stranger");
    let hs256 = hs256(
        &json!({ "iss": FIT_ISSUER, "aud": APP_ARI, "exp": now() + 25,
        "app": { "installationId": a.installation_id() } }),
        "guess",
    );
    let valid = fit(0, &a, json!({}));
    let (head, payload, _) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            (),
        )
    };
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let tampered = format!("{head}.{payload}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
    let no_kid = {
        let pem = keys()[0].to_pkcs8_pem(LineEnding::LF).unwrap();
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({ "iss": FIT_ISSUER, "aud": APP_ARI,
            "exp": now() + 25, "app": { "installationId": a.installation_id() } }),
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    for (token, code) in [
        (
            fit(
                0,
                &a,
                json!({ "aud": "ari:cloud:ecosystem::app/someone-else" }),
            ),
            "invalid_audience",
        ),
        (
            fit(0, &a, json!({ "iss": "forge/something-else" })),
            "invalid_issuer",
        ),
        (
            fit(
                0,
                &a,
                json!({ "iat": now() - 600, "nbf": now() - 600, "exp": now() - 300 }),
            ),
            "expired",
        ),
        (
            fit(0, &a, json!({ "nbf": now() + 600, "exp": now() + 900 })),
            "not_yet_valid",
        ),
        (fit(0, &a, json!({ "exp": null })), "missing_claim"),
        (
            fit(0, &a, json!({ "app": { "id": APP_ARI } })),
            "malformed_token",
        ),
        (fit(0, &stranger, json!({})), "unmapped_installation"),
        (hs256, "unsupported_algorithm"),
        (none, "unsupported_algorithm"),
        (tampered, "bad_signature"),
        (no_kid, "invalid_kid"),
        ("garbage".to_owned(), "malformed_token"),
    ] {
        invoke(&app, "GET", NOTES, &token, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, code);
    }
    app.call("GET", NOTES, None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    // Each door takes only its own token.
    app.call("GET", NOTES, Some(&a.token("GET", NOTES)), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unsupported_scheme");
    invoke(&app, "GET", CONNECT_NOTES, &valid, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unsupported_scheme");
    assert_eq!(
        invoke(&app, "GET", NOTES, &valid, None).await.status,
        StatusCode::OK
    );
    let _ = jwks;
}

async fn a_site_installed_without_an_installation_id_is_found_by_its_cloud_id(
    app: TestApp,
    jwks: Jwks,
) {
    let hooks = &app;
    let install = |tenant: &TestTenant, cloud_id: &str| {
        let mut payload = tenant.payload("installed");
        payload.as_object_mut().unwrap().remove("installationId");
        payload["cloudId"] = cloud_id.into();
        let token = install_token(tenant, "/installed", json!({}));
        async move {
            hooks
                .call("POST", "/installed", Some(&token), Some(&payload))
                .await
                .status
        }
    };
    let a = TestTenant::new("a");
    assert_eq!(install(&a, "cloud-a").await, StatusCode::NO_CONTENT);
    app.signed(&a, "POST", CONNECT_NOTES, Some(&json!({ "body": "a's" })))
        .await;
    let unknown_installation = TestTenant::new("forge-only");
    let by_context = fit(
        0,
        &unknown_installation,
        json!({ "context": { "cloudId": "cloud-a",
        "extension": { "type": "jira:issuePanel", "issue": { "key": "PROJ-1", "id": "10000" } } } }),
    );
    assert_eq!(
        invoke(&app, "GET", NOTES, &by_context, None).await.json()[0]["body"],
        "a's"
    );
    let by_installation = fit(
        0,
        &unknown_installation,
        json!({ "app": {
        "id": APP_ARI, "installationId": unknown_installation.installation_id(),
        "installation": { "id": "x", "contexts": [{ "name": "jira", "cloudId": "cloud-a" }] } } }),
    );
    assert_eq!(
        invoke(&app, "GET", NOTES, &by_installation, None)
            .await
            .status,
        StatusCode::OK
    );
    // Two products of one site share its cloud id: which tenant is meant is unknown.
    let (jira, confluence) = (TestTenant::new("jira"), TestTenant::new("confluence"));
    assert_eq!(install(&jira, "cloud-shared").await, StatusCode::NO_CONTENT);
    assert_eq!(
        install(&confluence, "cloud-shared").await,
        StatusCode::NO_CONTENT
    );
    for context in [
        json!({ "cloudId": "cloud-shared" }),
        json!({ "cloudId": "cloud-nowhere" }),
    ] {
        invoke(
            &app,
            "GET",
            NOTES,
            &fit(0, &unknown_installation, json!({ "context": context })),
            None,
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unmapped_installation");
    }
    // Naming two sites at once names none.
    let two = fit(
        0,
        &unknown_installation,
        json!({ "context": { "cloudId": "cloud-a" }, "app": {
        "id": APP_ARI, "installationId": unknown_installation.installation_id(),
        "installation": { "id": "x", "contexts": [{ "cloudId": "cloud-shared" }] } } }),
    );
    invoke(&app, "GET", NOTES, &two, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unmapped_installation");
    let _ = jwks;
}

async fn an_install_naming_another_tenants_installation_id_is_refused_and_takes_nothing(
    app: TestApp,
    jwks: Jwks,
) {
    let a = app.install("a").await;
    app.signed(&a, "POST", CONNECT_NOTES, Some(&json!({ "body": "a's" })))
        .await;
    let b = TestTenant::new("b");
    let with_id = |tenant: &TestTenant, event: &str, id: &str| {
        let mut payload = tenant.payload(event);
        payload["installationId"] = id.into();
        payload
    };
    let path = "/installed";
    let taking = with_id(&b, "installed", &a.installation_id());
    app.call(
        "POST",
        path,
        Some(&install_token(&b, path, json!({}))),
        Some(&taking),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "installation_id_taken");
    assert!(!app.stored(&b).await, "the refused install was stored");

    // b installs with an id of its own; neither its notes nor its uninstall touch a's.
    let b = app.install_tenant(b).await;
    invoke(
        &app,
        "POST",
        NOTES,
        &fit(0, &b, json!({})),
        Some(&json!({ "body": "b's" })),
    )
    .await;
    let as_a = || fit(0, &a, json!({}));
    assert_eq!(
        invoke(&app, "GET", NOTES, &as_a(), None).await.json(),
        app.signed(&a, "GET", CONNECT_NOTES, None).await.json()
    );
    assert_eq!(
        invoke(&app, "GET", NOTES, &as_a(), None).await.json()[0]["body"],
        "a's"
    );
    assert_eq!(
        app.hook(&b, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        invoke(&app, "GET", NOTES, &as_a(), None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A reinstall of b naming a's id, after b's uninstall, is refused as well.
    app.call(
        "POST",
        path,
        Some(&install_token(&b, path, json!({}))),
        Some(&with_id(&b, "installed", &a.installation_id())),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "installation_id_taken");
    assert_eq!(
        invoke(&app, "GET", NOTES, &as_a(), None).await.status,
        StatusCode::OK
    );
    let _ = jwks;
}

async fn a_cloud_id_resolves_among_the_installed_tenants_of_the_invoked_product(
    app: TestApp,
    jwks: Jwks,
) {
    let hooks = &app;
    let install = |tenant: &TestTenant, product: &str| {
        let mut payload = tenant.payload("installed");
        payload.as_object_mut().unwrap().remove("installationId");
        payload["cloudId"] = "cloud-site".into();
        payload["productType"] = product.into();
        let token = install_token(tenant, "/installed", json!({}));
        async move {
            hooks
                .call("POST", "/installed", Some(&token), Some(&payload))
                .await
                .status
        }
    };
    let (jira, confluence) = (TestTenant::new("jira"), TestTenant::new("confluence"));
    assert_eq!(install(&jira, "jira").await, StatusCode::NO_CONTENT);
    app.signed(
        &jira,
        "POST",
        CONNECT_NOTES,
        Some(&json!({ "body": "jira's" })),
    )
    .await;
    assert_eq!(
        install(&confluence, "confluence").await,
        StatusCode::NO_CONTENT
    );
    let forge_only = TestTenant::new("forge-only");
    let calling = |product: &str| {
        fit(
            0,
            &forge_only,
            json!({
        "context": { "cloudId": "cloud-site",
                     "extension": { "type": "jira:issuePanel", "issue": { "key": "PROJ-1" } } },
        "app": { "id": APP_ARI, "installationId": forge_only.installation_id(),
                 "apiBaseUrl": format!("https://api.atlassian.com/ex/{product}/cloud-site") } }),
        )
    };
    let listed = invoke(&app, "GET", NOTES, &calling("jira"), None).await;
    assert_eq!(
        listed.json()[0]["body"],
        "jira's",
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    assert_eq!(
        invoke(&app, "GET", NOTES, &calling("confluence"), None)
            .await
            .json(),
        json!([])
    );

    // A second claim of the site for the same product names no one: refused, never the
    // wrong tenant; once it is uninstalled the site resolves again.
    let claimant = TestTenant::new("claimant");
    assert_eq!(install(&claimant, "jira").await, StatusCode::NO_CONTENT);
    invoke(&app, "GET", NOTES, &calling("jira"), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unmapped_installation");
    assert_eq!(
        app.hook(&claimant, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        invoke(&app, "GET", NOTES, &calling("jira"), None)
            .await
            .json()[0]["body"],
        "jira's"
    );
    let _ = jwks;
}

async fn a_reinstall_with_a_new_installation_id_retires_the_old_one(app: TestApp, jwks: Jwks) {
    let a = app.install("a").await;
    assert_eq!(
        invoke(&app, "GET", NOTES, &fit(0, &a, json!({})), None)
            .await
            .status,
        StatusCode::OK
    );
    let mut payload = a.payload("installed");
    payload["installationId"] = "ari:cloud:ecosystem::installation/reinstalled".into();
    let token = install_token(&a, "/installed", json!({}));
    assert_eq!(
        app.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    invoke(&app, "GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unmapped_installation");
    let renewed = fit(
        0,
        &a,
        json!({ "app": { "id": APP_ARI, "installationId": "ari:cloud:ecosystem::installation/reinstalled" } }),
    );
    assert_eq!(
        invoke(&app, "GET", NOTES, &renewed, None).await.status,
        StatusCode::OK
    );
    let _ = jwks;
}

async fn an_uninstalled_or_disabled_site_is_refused(app: TestApp, jwks: Jwks) {
    let a = app.install("a").await;
    app.hook(&a, "disabled").await;
    invoke(&app, "GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "tenant_disabled");
    app.hook(&a, "enabled").await;
    app.hook(&a, "uninstalled").await;
    // Installation ids are resolved among installed tenants only.
    invoke(&app, "GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unmapped_installation");
    let _ = jwks;
}

async fn unknown_keys_refetch_the_jwks_at_most_once_per_interval_and_rotation_is_followed(
    app: TestApp,
    jwks: Jwks,
) {
    let a = app.install("a").await;
    assert_eq!(
        invoke(&app, "GET", NOTES, &fit(0, &a, json!({})), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(jwks.hits(), 1);
    // A key not published: within the interval since the last fetch, no refetch at all.
    for _ in 0..5 {
        invoke(&app, "GET", NOTES, &fit(1, &a, json!({})), None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
    }
    assert_eq!(jwks.hits(), 1, "unknown kids must not hammer the JWKS");
    // Forge rotates: key 1 is published, key 0 withdrawn.
    jwks.publish(&[1]);
    let started = std::time::Instant::now();
    loop {
        let response = invoke(&app, "GET", NOTES, &fit(1, &a, json!({})), None).await;
        if response.status == StatusCode::OK {
            break;
        }
        response.assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the rotated key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(jwks.hits(), 2, "one refetch once the interval had passed");
}

async fn the_system_token_calls_the_product_as_the_app_for_that_request_only(
    app: TestApp,
    jwks: Jwks,
) {
    let a = app.install("a").await;
    async fn myself(headers: HeaderMap) -> Result<Json<Value>, StatusCode> {
        match headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            Some("Bearer system-token-123") => Ok(Json(json!({ "accountId": "app-user" }))),
            _ => Err(StatusCode::UNAUTHORIZED),
        }
    }
    let product = Router::new().route("/ex/jira/cloud-1/rest/api/3/myself", get(myself));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_base = format!("http://{}/ex/jira/cloud-1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, product).await });

    async fn whoami(
        invocation: ForgeInvocation,
        State(app): State<connect_axum::app::AppState>,
    ) -> connect_axum::error::Result<Json<Value>> {
        Ok(Json(
            app.product
                .as_forge_app(&invocation)?
                .get("/rest/api/3/myself")
                .await?,
        ))
    }
    let router = app.router.clone().merge(
        Router::new()
            .route("/forge/whoami", get(whoami))
            .route_layer(middleware::from_fn_with_state(
                app.state.auth.clone(),
                auth::require_forge,
            ))
            .with_state(app.state.clone()),
    );
    let token = fit(
        0,
        &a,
        json!({ "app": { "id": APP_ARI, "installationId": a.installation_id(), "apiBaseUrl": api_base } }),
    );
    let call = |system: Option<&'static str>| {
        let mut request =
            Request::get("/forge/whoami").header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(system) = system {
            request = request.header("x-forge-oauth-system", system);
        }
        router.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let ok = call(Some("system-token-123")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&axum::body::to_bytes(ok.into_body(), 1 << 16).await.unwrap())
            .unwrap();
    assert_eq!(body["accountId"], "app-user");
    // Without a system token there is nothing to call with: a clear error, no call made.
    let missing = call(None).await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_GATEWAY);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(missing.into_body(), 1 << 16)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["error"], "product_error");
    let _ = jwks;
}

forge_tests!(
    a_forge_invocation_and_a_connect_jwt_reach_the_same_tenant,
    bad_invocation_tokens_are_refused_with_401,
    a_site_installed_without_an_installation_id_is_found_by_its_cloud_id,
    an_install_naming_another_tenants_installation_id_is_refused_and_takes_nothing,
    a_cloud_id_resolves_among_the_installed_tenants_of_the_invoked_product,
    a_reinstall_with_a_new_installation_id_retires_the_old_one,
    an_uninstalled_or_disabled_site_is_refused,
    unknown_keys_refetch_the_jwks_at_most_once_per_interval_and_rotation_is_followed,
    the_system_token_calls_the_product_as_the_app_for_that_request_only,
);

#[tokio::test]
async fn without_forge_app_id_forge_routes_are_off() {
    let app = TestApp::sqlite().await;
    let a = app.install("a").await;
    invoke(&app, "GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "forge_not_configured");
}

#[tokio::test]
async fn no_invocation_token_or_system_token_reaches_the_logs() {
    let jwks = Jwks::start(&[0]).await;
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("forge.db").display());
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &db),
        ("BASE_URL", BASE_URL),
        ("INSTALL_KEYS_URL", &keys.url),
        ("FORGE_APP_ID", APP_ARI),
        ("FORGE_JWKS_URL", &jwks.url),
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", "json"),
    ])
    .await;
    let client = reqwest::Client::new();
    let tenant = TestTenant::new("forged");
    let installed = client
        .post(format!("{}/installed", server.url))
        .header(
            "authorization",
            format!("JWT {}", install_token(&tenant, "/installed", json!({}))),
        )
        .json(&tenant.payload("installed"))
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), 204);
    let token = fit(0, &tenant, json!({}));
    let system = "system-token-never-logged";
    for bearer in [token.clone(), format!("{token}x")] {
        client
            .get(format!("{}{NOTES}", server.url))
            .header("authorization", format!("Bearer {bearer}"))
            .header("x-forge-oauth-system", system)
            .send()
            .await
            .unwrap();
    }
    let (_, logs) = server.stop().await;
    assert!(
        logs.contains("/forge/api/issues/PROJ-1/notes"),
        "the logs were captured"
    );
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("FIT", token.as_str()),
        ("FIT signature", signature),
        ("system token", system),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the logs");
    }
}

#[tokio::test]
async fn an_installation_id_moved_through_one_replica_is_followed_by_the_other() {
    let jwks = Jwks::start(&[0]).await;
    let one = TestApp::postgres_with(jwks.vars()).await;
    let two = one.replica_with(jwks.vars()).await;
    let (a, b) = (one.install("a").await, one.install("b").await);
    let moved = "ari:cloud:ecosystem::installation/moved";
    let install_with = |tenant: &TestTenant, id: &str| {
        let mut payload = tenant.payload("installed");
        payload["installationId"] = id.into();
        (install_token(tenant, "/installed", json!({})), payload)
    };
    let (token, payload) = install_with(&a, moved);
    assert_eq!(
        one.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let as_moved = || {
        fit(
            0,
            &a,
            json!({ "app": { "id": APP_ARI, "installationId": moved } }),
        )
    };
    two.signed(&a, "POST", CONNECT_NOTES, Some(&json!({ "body": "a's" })))
        .await;
    assert_eq!(
        invoke(&two, "GET", NOTES, &as_moved(), None).await.json()[0]["body"],
        "a's"
    );

    // a leaves the id behind when it uninstalls; b takes it; the other replica follows.
    assert_eq!(
        one.hook(&a, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    let (token, payload) = install_with(&b, moved);
    assert_eq!(
        one.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let listed = invoke(&two, "GET", NOTES, &as_moved(), None).await;
        if listed.status == StatusCode::OK && listed.json() == json!([]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {} {}",
            listed.status,
            String::from_utf8_lossy(&listed.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
