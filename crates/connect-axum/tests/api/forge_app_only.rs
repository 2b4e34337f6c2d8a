//! The app-level Forge endpoints (lifecycle and product events, preUninstall, the scheduled
//! trigger, the realm migration hooks) take only Forge's calls as the app: a user's UI FIT,
//! which can name any path of the remote, is refused before anything changes, and only app calls
//! store the system token, the newest FIT's winning. On both stores.

use axum::http::StatusCode;
use connect_axum_testing::FakeForge;
use connect_axum_testing::forge::{ForgeSite, invocation, system_token};
use serde_json::json;

use crate::probe::{TestApp, now};

const APP_ARI: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000a1";

async fn start(postgres: bool, settings: Vec<(&'static str, String)>) -> (TestApp, FakeForge) {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let under_test = connect_axum_testing::AppUnderTest::new(crate::probe::app);
    let app = crate::probe::start_trusting(under_test, postgres, &forge, settings).await;
    (app, forge)
}

#[track_caller]
fn ok(response: connect_axum_testing::TestResponse) {
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

async fn installed(app: &TestApp, forge: &FakeForge, site: &ForgeSite) {
    let body = json!({ "eventType": "avi:forge:installed:app" });
    let response = app
        .deliver("/forge/events", &forge.trigger(site).sign(), None, &body)
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}

async fn tenant_state(app: &TestApp) -> Vec<Option<String>> {
    app.raw(
        "select coalesce(cast(uninstalled_at as text), 'installed') || ' ' || \
         coalesce(forge_permissions, '-') from tenant",
    )
    .await
}

async fn a_users_ui_invocation_reaches_no_app_level_endpoint(postgres: bool) {
    let (app, forge) = start(postgres, vec![]).await;
    let site = forge.site("acme");
    installed(&app, &forge, &site).await;
    let before = tenant_state(&app).await;
    let user = forge.fit_on(&site).sign();
    let anonymous = forge.fit_on(&site).principal(None).sign();
    // A call without a user or view that is not of an endpoint module is not the app's either.
    let ui_module = forge
        .trigger(&site)
        .module("jira:issuePanel", "notes-panel")
        .sign();
    let bodies = [
        (
            "/forge/events",
            json!({ "eventType": "avi:forge:upgraded:app",
            "permissions": { "scopes": ["stolen"] } }),
        ),
        (
            "/forge/events",
            json!({ "eventType": "avi:jira:deleted:issue",
            "issue": { "key": "PROJ-1" } }),
        ),
        ("/forge/pre-uninstall", json!({})),
        ("/forge/scheduled", json!({})),
        (
            "/forge/migration/schedule",
            json!({ "migrationId": 57500, "location": "EU" }),
        ),
        ("/forge/migration/start", json!({ "migrationId": 57500 })),
        ("/forge/migration/commit", json!({ "migrationId": 57500 })),
        ("/forge/migration/rollback", json!({ "migrationId": 57500 })),
    ];
    let token = system_token(now() + 3600);
    for (path, body) in &bodies {
        for (fit, reason) in [
            (&user, "user_invocation"),
            (&anonymous, "user_invocation"),
            (&ui_module, "not_app_invocation"),
        ] {
            app.deliver(path, fit, Some(&token), body)
                .await
                .assert_error(StatusCode::FORBIDDEN, reason);
        }
    }
    let status = "/forge/migration/status?migrationId=57500";
    app.send(invocation("GET", status, &user, &[], None))
        .await
        .assert_error(StatusCode::FORBIDDEN, "user_invocation");
    // Nothing changed: still installed, no permissions, nothing queued, no token stored.
    assert_eq!(tenant_state(&app).await, before);
    assert!(app.raw("select id from forge_event").await.is_empty());
    assert!(
        app.raw("select client_key from forge_system_token")
            .await
            .is_empty()
    );
    assert!(
        app.raw("select migration_id from realm_migration")
            .await
            .is_empty()
    );
    // The app's own calls still pass.
    ok(app
        .deliver(
            "/forge/scheduled",
            &forge.trigger(&site).sign(),
            Some(&token),
            &json!({}),
        )
        .await);
}

async fn pinned_module_keys_refuse_calls_of_other_modules(postgres: bool) {
    let settings = vec![
        ("FORGE_EVENTS_MODULE_KEYS", "lifecycle".to_owned()),
        (
            "FORGE_SCHEDULED_MODULE_KEYS",
            "scheduled, token-refresh".to_owned(),
        ),
    ];
    let (app, forge) = start(postgres, settings).await;
    let site = forge.site("acme");
    installed(&app, &forge, &site).await;
    let token = system_token(now() + 3600);
    let other = forge.trigger(&site).module("core:endpoint", "other").sign();
    app.deliver("/forge/scheduled", &other, Some(&token), &json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "unexpected_module");
    let scheduled = forge
        .trigger(&site)
        .module("core:endpoint", "scheduled")
        .sign();
    ok(app
        .deliver("/forge/scheduled", &scheduled, Some(&token), &json!({}))
        .await);
    // Not pinned: any endpoint module's call as the app.
    ok(app
        .deliver("/forge/pre-uninstall", &other, None, &json!({}))
        .await);
}

async fn only_app_calls_store_the_system_token_and_the_newest_fit_wins(postgres: bool) {
    let (app, forge) = start(postgres, vec![]).await;
    let site = forge.site("acme");
    installed(&app, &forge, &site).await;
    // Each token here has an expiry of its own: the stored one is known by it.
    let stored = || async {
        app.raw("select cast(expires_at as text) from forge_system_token")
            .await
    };
    let forges = system_token(now() + 2 * 3600);
    let scheduled = forge.trigger(&site).sign();
    ok(app
        .deliver("/forge/scheduled", &scheduled, Some(&forges), &json!({}))
        .await);
    let first = stored().await;
    assert_eq!(first.len(), 1);
    // A user's call with a token that claims to live longer is served but stores nothing.
    let users = system_token(now() + 4 * 3600 - 60);
    let user = forge.fit_on(&site).sign();
    let header = [(
        connect_axum::auth::forge::SYSTEM_TOKEN_HEADER,
        users.as_str(),
    )];
    let response = app
        .send(invocation("GET", "/forge/probe", &user, &header, None))
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(stored().await, first);
    // A newer app call's token replaces it even when it lives less long; an older one does not.
    let newer = system_token(now() + 3600);
    let later = forge.trigger(&site).valid(now() + 1, now() + 26).sign();
    ok(app
        .deliver("/forge/scheduled", &later, Some(&newer), &json!({ "n": 1 }))
        .await);

    let second = stored().await;
    assert_ne!(second, first);
    let older = forge.trigger(&site).valid(now() - 10, now() + 15).sign();
    let stale = system_token(now() + 3 * 3600);
    ok(app
        .deliver("/forge/scheduled", &older, Some(&stale), &json!({ "n": 2 }))
        .await);

    assert_eq!(stored().await, second);
}

async fn a_fit_issued_in_the_future_is_refused(postgres: bool) {
    let (app, forge) = start(postgres, vec![]).await;
    let site = forge.site("acme");
    installed(&app, &forge, &site).await;
    let future = forge
        .fit_on(&site)
        .valid(now() + 3600, now() + 3620)
        .claims(json!({ "nbf": null }))
        .sign();
    let response = app.invoke("GET", "/forge/probe", &future, None).await;
    assert_eq!(
        (response.status, response.json()["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("issued_in_future"))
    );
}

crate::probe::on_both_stores!(
    postgres: bool,
    a_users_ui_invocation_reaches_no_app_level_endpoint,
    pinned_module_keys_refuse_calls_of_other_modules,
    only_app_calls_store_the_system_token_and_the_newest_fit_wins,
    a_fit_issued_in_the_future_is_refused,
);

async fn a_migration_id_with_control_characters_is_refused(postgres: bool) {
    let (app, forge) = start(postgres, vec![]).await;
    let site = forge.site("acme");
    installed(&app, &forge, &site).await;
    let body = json!({ "migrationId": "1\nERROR forged line", "location": "EU" });
    let response = app
        .deliver(
            "/forge/migration/schedule",
            &forge.trigger(&site).sign(),
            None,
            &body,
        )
        .await;
    assert_eq!(
        (response.status, response.json()["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_migration_id"))
    );
    assert!(
        app.raw("select migration_id from realm_migration")
            .await
            .is_empty()
    );
}

crate::probe::on_both_stores!(postgres: bool, a_migration_id_with_control_characters_is_refused);
