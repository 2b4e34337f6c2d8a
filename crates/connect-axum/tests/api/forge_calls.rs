//! A Forge remote calling Atlassian: the product as the invoking user (`x-forge-oauth-user`), as
//! a user offline (GraphQL `offlineUserAuthToken` with the stored system token), Forge hosted
//! storage; and browsers calling the remote straight (`requestRemote`, CORS).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use connect_axum::auth::forge::{SYSTEM_TOKEN_HEADER, USER_TOKEN_HEADER};
use connect_axum_testing::forge::{self as kit, ForgeSite};
use connect_axum_testing::{FakeForge, FakeForgeApi, FakeProduct};
use serde_json::json;

use crate::probe::*;

const APP_ARI: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000ca";

struct World {
    app: TestApp,
    forge: FakeForge,
    api: FakeForgeApi,
    product: FakeProduct,
    site: ForgeSite,
    system: String,
}

/// A Forge site installed with a system token the fake API knows, whose product calls go to the
/// fake product.
async fn world(postgres: bool, extra: Vec<(&'static str, String)>) -> World {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let api = FakeForgeApi::start().await;
    let product = FakeProduct::builder(APP_KEY)
        .base_path("/ex/jira/site")
        .start()
        .await;
    let mut settings = vec![
        ("FORGE_GRAPHQL_URL", api.graphql_url()),
        ("FORGE_API_BASE_URL", api.base_url().to_owned()),
    ];
    settings.extend(extra);
    let app = start_trusting(probe(), postgres, &forge, settings).await;
    let site = forge.site("acme");
    let system = api.system_token(&site.installation_id);
    let fit = forge.trigger(&site).api_base_url(product.base_url()).sign();
    let body = json!({ "eventType": "avi:forge:installed:app" });
    let installed = app
        .deliver("/forge/events", &fit, Some(&system), &body)
        .await;
    assert_eq!(installed.status, StatusCode::OK);
    World {
        app,
        forge,
        api,
        product,
        site,
        system,
    }
}

async fn the_user_token_calls_the_product_as_that_user_and_is_never_shown(postgres: bool) {
    let w = world(postgres, vec![]).await;
    w.product.bearer("user-token-1", "557058:forge-user");
    let fit = w
        .forge
        .fit_on(&w.site)
        .api_base_url(w.product.base_url())
        .sign();
    let me = w
        .app
        .send(kit::invocation(
            "GET",
            "/forge/as-user",
            &fit,
            &[(USER_TOKEN_HEADER, "user-token-1")],
            None,
        ))
        .await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&me.body)
    );
    assert_eq!(me.json()["accountId"], "557058:forge-user");
    assert!(matches!(
        &w.product.received()[0].caller,
        connect_axum_testing::Caller::User { account_id } if account_id == "557058:forge-user"
    ));
    // Without one there is nothing to call with: a clear error, no call.
    w.app
        .invoke("GET", "/forge/as-user", &fit, None)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "product_error");
    assert_eq!(w.product.received().len(), 1);
    let shown = w
        .app
        .send(kit::invocation(
            "GET",
            "/forge/debug",
            &fit,
            &[
                (USER_TOKEN_HEADER, "user-token-1"),
                (SYSTEM_TOKEN_HEADER, "system-token-9"),
            ],
            None,
        ))
        .await;
    let shown = String::from_utf8(shown.body).unwrap();
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(
        !shown.contains("user-token-1") && !shown.contains("system-token-9"),
        "{shown}"
    );
}

async fn offline_user_tokens_come_from_the_stored_system_token_and_are_kept(postgres: bool) {
    let w = world(postgres, vec![]).await;
    // The fake numbers what it issues: the system token was its first.
    w.product.bearer("fake-user-token-2", "557058:alice");
    let fit = w.forge.trigger(&w.site).sign();
    for _ in 0..2 {
        let me = w
            .app
            .invoke("GET", "/forge/offline/557058:alice", &fit, None)
            .await;
        assert_eq!(
            me.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&me.body)
        );
        assert_eq!(me.json()["accountId"], "557058:alice");
    }
    assert_eq!(
        w.api.issued_user_tokens(),
        [("557058:alice".to_owned(), "fake-user-token-2".to_owned())]
    );
    assert_eq!(w.api.impersonations(), 1, "kept for the second call");
    let asked = &w.api.impersonation_requests()[0];
    assert_eq!(
        asked.installation_id.as_deref(),
        Some(w.site.installation_id.as_str())
    );
    assert_eq!(
        asked.context_ids,
        [format!("ari:cloud:jira::site/{}", w.site.cloud_id)]
    );
    // A refusal is typed and not kept.
    w.api
        .refuse_impersonation("557058:bob", "user has not consented");
    for _ in 0..2 {
        let refused = w
            .app
            .invoke("GET", "/forge/offline/557058:bob", &fit, None)
            .await;
        assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
        assert_eq!(refused.json()["error"], "impersonation_refused");
    }
    assert_eq!(w.api.impersonations(), 3);
    // A stored system token past its expiry asks nothing of anyone.
    w.app
        .raw("update forge_system_token set expires_at = '2020-01-01T00:00:00+00:00'")
        .await;
    w.app
        .invoke("GET", "/forge/offline/557058:carol", &fit, None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "system_token_unavailable");
    assert_eq!(w.api.impersonations(), 3);
    let _ = w.system;
}

async fn forge_storage_is_reached_with_the_stored_system_token(postgres: bool) {
    let w = world(postgres, vec![]).await;
    let fit = || w.forge.trigger(&w.site).sign();
    let put = w
        .app
        .invoke(
            "PUT",
            "/forge/storage/settings:colour",
            &fit(),
            Some(&json!({ "v": 1 })),
        )
        .await;
    assert_eq!(
        put.status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&put.body)
    );
    assert_eq!(
        w.api.stored(&w.site.installation_id, "settings:colour"),
        Some(json!({ "v": 1 }))
    );
    let got = w
        .app
        .invoke("GET", "/forge/storage/settings:colour", &fit(), None)
        .await;
    assert_eq!(got.json(), json!({ "value": { "v": 1 } }));
    let missing = w
        .app
        .invoke("GET", "/forge/storage/nothing-here", &fit(), None)
        .await;
    assert_eq!(missing.json(), json!({ "value": null }));
    // Rate limited once: waited out and retried.
    w.api.rate_limit_next(1, None);
    let again = w
        .app
        .invoke(
            "PUT",
            "/forge/storage/settings:colour",
            &fit(),
            Some(&json!({ "v": 2 })),
        )
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(
        w.api.stored(&w.site.installation_id, "settings:colour"),
        Some(json!({ "v": 2 }))
    );
    // A key Forge would refuse is refused before any call.
    let calls = w.api.storage_calls();
    let bad = w
        .app
        .invoke("GET", "/forge/storage/no!key", &fit(), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(w.api.storage_calls(), calls);
}

async fn browsers_of_allowed_origins_get_a_preflight_without_a_token(postgres: bool) {
    let origin = "https://abc123.cdn.prod.atlassian-dev.net";
    let w = world(
        postgres,
        vec![(
            "FORGE_CORS_ORIGINS",
            "https://*.cdn.prod.atlassian-dev.net".to_owned(),
        )],
    )
    .await;
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/forge/probe")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-custom",
            )
            .body(Body::empty())
            .unwrap()
    };
    let allowed = w.app.send(preflight(origin)).await;
    assert!(allowed.status.is_success(), "{}", allowed.status);
    assert_eq!(allowed.headers["access-control-allow-origin"], origin);
    let headers = allowed.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for header in ["authorization", "content-type", "x-custom"] {
        assert!(headers.contains(header), "{headers}");
    }
    let refused = w.app.send(preflight("https://evil.example")).await;
    assert!(refused.headers.get("access-control-allow-origin").is_none());
    // The real request still needs its token; the refusal is readable by the allowed origin.
    let bare = Request::builder()
        .uri("/forge/probe")
        .header("origin", origin)
        .body(Body::empty())
        .unwrap();
    let unauthenticated = w.app.send(bare).await;
    unauthenticated.assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    assert_eq!(
        unauthenticated.headers["access-control-allow-origin"],
        origin
    );
    let mut with_token = kit::invocation(
        "GET",
        "/forge/probe",
        &w.forge.fit_on(&w.site).sign(),
        &[],
        None,
    );
    with_token
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    let ok = w.app.send(with_token).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["access-control-allow-origin"], origin);
    // Connect routes get no CORS.
    let connect = Request::builder()
        .method("OPTIONS")
        .uri("/api/probe")
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .body(Body::empty())
        .unwrap();
    assert!(
        w.app
            .send(connect)
            .await
            .headers
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// `auth::Invocation`, the handler's view of either Forge door, on a remote: the user token, the
/// system token, the storage of the token's installation.
async fn the_invocation_extractor_calls_with_the_remote_tokens(postgres: bool) {
    let w = world(postgres, vec![]).await;
    w.product.bearer("user-token-2", "557058:forge-user");
    w.product.bearer(&w.system, "app-system");
    let fit = || {
        w.forge
            .fit_on(&w.site)
            .api_base_url(w.product.base_url())
            .sign()
    };
    let tokens = [
        (USER_TOKEN_HEADER, "user-token-2"),
        (SYSTEM_TOKEN_HEADER, w.system.as_str()),
    ];
    for (who, account) in [("user", "557058:forge-user"), ("app", "app-system")] {
        let path = format!("/forge/invocation/myself/{who}");
        let me = w
            .app
            .send(kit::invocation("GET", &path, &fit(), &tokens, None))
            .await;
        assert_eq!(
            me.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&me.body)
        );
        assert_eq!(me.json()["accountId"], account);
    }
    let body = json!("blue");
    let put = w
        .app
        .send(kit::invocation(
            "PUT",
            "/forge/invocation/storage/colour",
            &fit(),
            &tokens,
            Some(&body),
        ))
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert_eq!(
        w.api.stored(&w.site.installation_id, "colour"),
        Some(json!("blue"))
    );
}

crate::probe::on_both_stores!(
    postgres: bool,
    the_invocation_extractor_calls_with_the_remote_tokens,
    the_user_token_calls_the_product_as_that_user_and_is_never_shown,
    offline_user_tokens_come_from_the_stored_system_token_and_are_kept,
    forge_storage_is_reached_with_the_stored_system_token,
    browsers_of_allowed_origins_get_a_preflight_without_a_token,
);
