//! The probe app: the library with a descriptor and one route of each authentication, which
//! answers who the request was verified as; started by the testing kit.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use connect_axum::app::AppState;
use connect_axum::auth::{
    self, ContextJwt, ForgeInvocation, ForgeToken, Invocation, ProductJwt, Tenant,
};
use connect_axum::config::Config;
use connect_axum::error::{JsonBody, PathParams, Result};
use connect_axum::forge::storage::SetOptions;
use connect_axum::server::{Builder, ConnectApp};
pub(crate) use connect_axum_testing::site::{KID, hs256, install_key, now, qsh_of, rs256};
pub(crate) use connect_axum_testing::{
    AppUnderTest, BASE_URL, Site, TestApp, TestResponse, TestTenant, on_both_stores,
};
use serde_json::{Value, json};

/// The probe's app key.
pub(crate) const APP_KEY: &str = "connect-axum-probe";

const DESCRIPTOR: &str = r#"{
    "key": "connect-axum-probe",
    "name": "connect-axum probe",
    "authentication": { "type": "jwt" },
    "apiMigrations": { "signed-install": true },
    "lifecycle": {
        "installed": "/installed",
        "uninstalled": "/uninstalled",
        "enabled": "/enabled",
        "disabled": "/disabled"
    }
}"#;

async fn whoami(tenant: Tenant) -> Json<Value> {
    Json(json!({
        "clientKey": tenant.client_key().as_str(),
        "accountId": tenant.account_id(),
    }))
}

/// Who sent a JSON body, and what it was.
async fn echo(tenant: Tenant, JsonBody(body): JsonBody<Value>) -> Json<Value> {
    Json(json!({
        "clientKey": tenant.client_key().as_str(),
        "accountId": tenant.account_id(),
        "body": body,
    }))
}

/// A form post, read once its token verified: who sent it and its `body` field; 201, as a write.
async fn form(
    tenant: Tenant,
    Form(fields): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({
            "clientKey": tenant.client_key().as_str(),
            "body": fields.get("body"),
        })),
    )
}

/// What a Forge invocation told the app: every claim, typed, and the licence the tenant has.
async fn context(tenant: Tenant, invocation: ForgeInvocation) -> Json<Value> {
    Json(json!({
        "claims": invocation.claims,
        "license": format!("{:?}", tenant.license()),
        "typedLicense": invocation.claims.license(),
        "production": invocation.claims.is_production(),
    }))
}

/// The product's `myself` as the invoking user, with the invocation's user token.
async fn as_user(invocation: ForgeInvocation, State(app): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(
        app.product()
            .as_forge_user(&invocation)?
            .get("/rest/api/3/myself")
            .await?,
    ))
}

/// The product's `myself` as `account`, with an offline user token.
async fn offline(
    tenant: Tenant,
    State(app): State<AppState>,
    PathParams(account): PathParams<String>,
) -> Result<Json<Value>> {
    let (token, api_base_url) = app
        .offline_user_token(tenant.client_key(), &account)
        .await?;
    Ok(Json(
        app.product()
            .with_forge_token(&token, &api_base_url)
            .get("/rest/api/3/myself")
            .await?,
    ))
}

/// A value of the installation's Forge storage, read with the stored system token.
async fn storage_get(
    tenant: Tenant,
    State(app): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<Value>> {
    let token = app.system_token(tenant.client_key()).await?;
    let value: Option<Value> = app
        .forge_storage()
        .for_installation(&token.token)
        .get(&key)
        .await?;
    Ok(Json(json!({ "value": value })))
}

/// Sets a value of the installation's Forge storage.
async fn storage_put(
    tenant: Tenant,
    State(app): State<AppState>,
    PathParams(key): PathParams<String>,
    JsonBody(value): JsonBody<Value>,
) -> Result<StatusCode> {
    let token = app.system_token(tenant.client_key()).await?;
    app.forge_storage()
        .for_installation(&token.token)
        .set(&key, &value, SetOptions::default())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The product's `myself`, as the invocation's user (`/user`) or the app (`/app`), whichever
/// Forge door the invocation came by.
async fn invocation_myself(
    invocation: Invocation,
    State(app): State<AppState>,
    PathParams(who): PathParams<String>,
) -> Result<Json<Value>> {
    let caller = if who == "user" {
        invocation.product_as_user(app.product())?
    } else {
        invocation.product_as_app(app.product())?
    };
    Ok(Json(caller.get("/rest/api/3/myself").await?))
}

/// A value of the invocation's Forge storage, whichever door it came by.
async fn invocation_storage_get(
    invocation: Invocation,
    State(app): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<Value>> {
    let storage = invocation
        .storage(app.forge_storage())
        .expect("the probe's invocations carry a system token");
    let value: Option<Value> = storage.get(&key).await?;
    Ok(Json(json!({ "value": value })))
}

/// Sets a value of the invocation's Forge storage.
async fn invocation_storage_put(
    invocation: Invocation,
    State(app): State<AppState>,
    PathParams(key): PathParams<String>,
    JsonBody(value): JsonBody<Value>,
) -> Result<StatusCode> {
    let storage = invocation
        .storage(app.forge_storage())
        .expect("the probe's invocations carry a system token");
    storage.set(&key, &value, SetOptions::default()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A product call to a host the app never declared.
async fn elsewhere(State(app): State<AppState>) -> Result<Json<Value>> {
    let token = ForgeToken::new("not-sent".to_owned());
    Ok(Json(
        app.product()
            .with_forge_token(&token, "https://elsewhere.example")
            .get("/rest/api/3/myself")
            .await?,
    ))
}

/// The invocation as `Debug` shows it.
async fn debug_invocation(invocation: ForgeInvocation) -> String {
    format!("{invocation:?}")
}

/// The probe as a server: `GET /api/probe`, `POST /api/probe/echo` (JSON) and
/// `POST /api/probe/form` (a form) behind [`ContextJwt`],
/// `GET /api/probe/product` behind [`ProductJwt`], `GET /forge/probe` and `POST /forge/echo`
/// behind a Forge Invocation Token.
pub(crate) fn app(config: Config) -> Builder {
    ConnectApp::builder(config)
        .descriptor(DESCRIPTOR)
        .routes::<ContextJwt>(
            Router::new()
                .route("/api/probe", get(whoami))
                .route("/api/probe/echo", post(echo))
                .route("/api/probe/form", post(form)),
        )
        .routes::<ProductJwt>(Router::new().route("/api/probe/product", get(whoami)))
        .routes::<ProductJwt>(
            Router::new()
                .route("/api/probe/licensed", get(whoami))
                .route_layer(middleware::from_fn(auth::require_license)),
        )
        .forge_routes(
            Router::new()
                .route("/forge/probe", get(whoami))
                .route("/forge/echo", post(echo))
                .route("/forge/context", get(context))
                .route("/forge/as-user", get(as_user))
                .route("/forge/offline/{account}", get(offline))
                .route("/forge/storage/{key}", get(storage_get).put(storage_put))
                .route("/forge/debug", get(debug_invocation))
                .route("/forge/invocation/myself/{who}", get(invocation_myself))
                .route(
                    "/forge/invocation/storage/{key}",
                    get(invocation_storage_get).put(invocation_storage_put),
                )
                .route("/forge/elsewhere", get(elsewhere)),
        )
        .forge_routes(
            Router::new()
                .route("/forge/licensed", get(whoami))
                .route_layer(middleware::from_fn(auth::require_license)),
        )
}

/// The probe, to start on a fresh store.
pub(crate) fn probe() -> AppUnderTest {
    AppUnderTest::new(app)
}

/// The site that installs the probe.
pub(crate) fn site() -> Site {
    Site {
        app_key: APP_KEY.to_owned(),
        app_base_url: BASE_URL.to_owned(),
    }
}

/// `app` on a fresh Postgres database or SQLite file, trusting `forge`, with `extra` settings over
/// the test defaults.
pub(crate) async fn start_trusting(
    app: AppUnderTest,
    postgres: bool,
    forge: &connect_axum_testing::FakeForge,
    extra: Vec<(&'static str, String)>,
) -> TestApp {
    let vars = forge.vars();
    let vars = move |name: &str| {
        extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| vars(name))
    };
    if postgres {
        app.postgres_with(vars).await
    } else {
        app.sqlite_with(vars).await
    }
}
