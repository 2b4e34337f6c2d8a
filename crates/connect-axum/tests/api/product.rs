//! Outbound calls, against the kit's fake product on loopback, which checks what a real site
//! checks: the app's JWT and its QSH, the user-token grant, and the bearer token of user calls.

use std::time::Duration;

use axum::http::StatusCode;
use connect_axum::auth::qsh;
use connect_axum::product::ProductError;
use connect_axum::store::Installation;
use connect_axum_testing::{FakeProduct, Reply};
use serde_json::{Value, json};

use crate::probe::*;

/// The kit's fake product for the probe (optionally under a base path, as Confluence's
/// `/wiki`), granting `user-1` tokens of `token_lifetime` seconds for `READ WRITE`, with the
/// resources these tests call.
async fn start(base_path: &str, token_lifetime: u64) -> FakeProduct {
    let fake = FakeProduct::builder(APP_KEY)
        .base_path(base_path)
        .token_lifetime(Duration::from_secs(token_lifetime))
        .user("user-1")
        .scope("READ WRITE")
        .start()
        .await;
    fake.on("GET", "/rest/api/3/issue/PROJ-1", |call| {
        Reply::json(
            StatusCode::OK,
            &json!({ "key": "PROJ-1", "query": call.query }),
        )
    });
    fake.on("POST", "/rest/api/3/issue/PROJ-1/comment", |call| {
        Reply::json(
            StatusCode::CREATED,
            &json!({ "id": "10000", "body": call.json()["body"] }),
        )
    });
    fake.on("GET", "/rest/api/3/busy", |_| {
        Reply::json(StatusCode::OK, &json!({ "ok": true }))
    });
    fake.on("GET", "/rest/api/3/overloaded", |_| {
        Reply::text(StatusCode::TOO_MANY_REQUESTS, "later").header("retry-after", "3600")
    });
    fake
}

/// An app whose tenant lives on `fake`.
async fn app_on(fake: &FakeProduct) -> (TestApp, Installation) {
    let vars = fake.vars();
    let app = probe()
        .sqlite_with(move |name| match name {
            "PRODUCT_TIMEOUT_SECS" => Some("5".to_owned()),
            _ => vars(name),
        })
        .await;
    let tenant = app.install_tenant(fake.tenant(&app.site, "site")).await;
    let record = app.stored_tenant(&tenant.client_key).await;
    (app, record.installation.clone())
}

// The client touches the store only through the installation it is given, so these run on
// one backend; the webhook and page tests run on both.

#[tokio::test]
async fn a_get_with_a_query_as_the_app_is_accepted_by_the_product() {
    let fake = start("", 900).await;
    let (app, site) = app_on(&fake).await;
    let issue: Value = app
        .state
        .product()
        .as_app(&site)
        .get("/rest/api/3/issue/PROJ-1?fields=summary,status&expand=names&q=a%20b+c*")
        .await
        .unwrap();
    assert_eq!(issue["key"], "PROJ-1");
}

#[tokio::test]
async fn a_post_with_a_body_as_the_app_is_accepted_by_the_product() {
    let fake = start("", 900).await;
    let (app, site) = app_on(&fake).await;
    let comment: Value = app
        .state
        .product()
        .as_app(&site)
        .post(
            "/rest/api/3/issue/PROJ-1/comment",
            &json!({ "body": "from the app 🦀" }),
        )
        .await
        .unwrap();
    assert_eq!(comment["body"], "from the app 🦀");
}

#[tokio::test]
async fn calls_under_a_base_path_sign_the_path_relative_to_it() {
    let fake = start("/wiki", 900).await;
    let (app, site) = app_on(&fake).await;
    let issue: Value = app
        .state
        .product()
        .as_app(&site)
        .get("/rest/api/3/issue/PROJ-1?x=1")
        .await
        .unwrap();
    assert_eq!(issue["query"], "x=1");
}

#[tokio::test]
async fn a_tampered_qsh_is_refused_by_the_product() {
    let fake = start("", 900).await;
    let (_app, site) = app_on(&fake).await;
    let claims = json!({
        "iss": APP_KEY, "iat": now(), "exp": now() + 180,
        "qsh": qsh::qsh("GET", "/rest/api/3/issue/PROJ-2", None, ""),
    });
    let token = hs256(&claims, site.shared_secret.expose());
    let response = reqwest::Client::new()
        .get(format!("{}/rest/api/3/issue/PROJ-1", fake.base_url()))
        .header("authorization", format!("JWT {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().starts_with("qsh"));
}

#[tokio::test]
async fn product_errors_come_back_typed() {
    let fake = start("", 900).await;
    let (app, site) = app_on(&fake).await;
    let caller = app.state.product().as_app(&site);
    match caller.get::<Value>("/rest/api/3/nothing-here").await {
        Err(ProductError::Status { status, body }) => {
            assert_eq!(status, 404);
            assert_eq!(body, "no such resource");
        }
        other => panic!("{other:?}"),
    }
    match caller.get::<Value>("/rest/api/3/overloaded").await {
        Err(ProductError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3600)))
        }
        other => panic!("{other:?}"),
    }
    for path in ["rest/api", "//evil.example/x", "@evil.example/x"] {
        assert!(
            matches!(
                caller.get::<Value>(path).await,
                Err(ProductError::InvalidPath)
            ),
            "{path}"
        );
    }
    let mut unreachable = site.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    unreachable.base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    assert!(matches!(
        app.state
            .product()
            .as_app(&unreachable)
            .get::<Value>("/rest/api/3/issue/PROJ-1")
            .await,
        Err(ProductError::Transport(_))
    ));
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_and_retried() {
    let fake = start("", 900).await;
    let (app, site) = app_on(&fake).await;
    fake.rate_limit_next(1, Some(Duration::from_secs(1)));
    let started = std::time::Instant::now();
    let answer: Value = app
        .state
        .product()
        .as_app(&site)
        .get("/rest/api/3/busy")
        .await
        .unwrap();
    assert_eq!(answer["ok"], true);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        fake.received()
            .iter()
            .filter(|call| call.path == "/rest/api/3/busy")
            .count(),
        2
    );
}

#[tokio::test]
async fn the_user_token_is_fetched_once_and_reused() {
    let fake = start("", 900).await;
    let (app, site) = app_on(&fake).await;
    let scopes = ["write", "READ"];
    let calls = (0..5).map(|_| {
        let client = app.state.product().clone();
        let site = site.clone();
        async move {
            client
                .as_user(&site, "user-1", &scopes)
                .get::<Value>("/rest/api/3/myself")
                .await
        }
    });
    for me in futures_util::future::join_all(calls).await {
        assert_eq!(me.unwrap()["accountId"], "user-1");
    }
    let me: Value = app
        .state
        .product()
        .as_user(&site, "user-1", &["READ", "WRITE"])
        .get("/rest/api/3/myself")
        .await
        .unwrap();
    assert_eq!(me["token"], "Bearer user-token-1");
    assert_eq!(fake.grants(), 1);
}

#[tokio::test]
async fn the_user_token_is_fetched_again_after_it_expires() {
    // A two-second token is reused for one second (half its life).
    let fake = start("", 2).await;
    let (app, site) = app_on(&fake).await;
    let caller = app
        .state
        .product()
        .as_user(&site, "user-1", &["READ", "WRITE"]);
    caller.get::<Value>("/rest/api/3/myself").await.unwrap();
    caller.get::<Value>("/rest/api/3/myself").await.unwrap();
    assert_eq!(fake.grants(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let me: Value = caller.get("/rest/api/3/myself").await.unwrap();
    assert_eq!(me["token"], "Bearer user-token-2");
    assert_eq!(fake.grants(), 2);
}

#[tokio::test]
async fn acting_as_a_user_needs_the_tenants_oauth_client() {
    let fake = start("", 900).await;
    let (app, mut site) = app_on(&fake).await;
    site.oauth_client_id = None;
    assert!(matches!(
        app.state
            .product()
            .as_user(&site, "user-1", &["READ"])
            .get::<Value>("/rest/api/3/myself")
            .await,
        Err(ProductError::NoOAuthClient)
    ));
    let (_, site) = app_on(&fake).await;
    assert!(matches!(
        app.state
            .product()
            .as_user(&site, "user-2", &["READ"])
            .get::<Value>("/rest/api/3/myself")
            .await,
        Err(ProductError::Grant { .. })
    ));
}
