//! Forge as a door of its own: tenants born of a Forge install, the lifecycle and event
//! endpoints, the stored system token, and the sample working on Forge alone.

use axum::http::StatusCode;
use connect_axum::product::ProductError;
use connect_axum::store::ClientKey;
use connect_axum_testing::forge::{self as kit, FakeForge, ForgeSite};
use connect_axum_testing::on_both_stores;
use connect_axum_testing::product::FakeProduct;
use serde_json::{Value, json};

use crate::forge::APP_ARI;
use crate::helpers::*;

const EVENTS: &str = "/forge/events";
const PRE_UNINSTALL: &str = "/forge/pre-uninstall";
const SCHEDULED: &str = "/forge/scheduled";

fn notes(issue: &str) -> String {
    format!("/forge/api/issues/{issue}/notes")
}

fn installed() -> Value {
    json!({ "payload": { "eventType": "avi:forge:installed:app", "id": "0a3a",
        "app": { "id": APP_ARI, "version": "1" } } })
}

/// Installs `site` through a Forge lifecycle delivery; returns the tenant's key.
async fn install(app: &TestApp, forge: &FakeForge, site: &ForgeSite) -> String {
    let token = kit::system_token(now() + 3 * 3600);
    let response = app
        .deliver(
            EVENTS,
            &forge.trigger(site).sign(),
            Some(&token),
            &installed(),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["tenant"].as_str().unwrap().to_owned()
}

async fn key_of(app: &TestApp, key: &str) -> ClientKey {
    app.stored_tenant(key).await.installation.client_key.clone()
}

async fn the_sample_lives_on_forge_alone(app: TestApp, forge: FakeForge) {
    let site = forge.site("solo");
    let tenant = install(&app, &forge, &site).await;
    assert_eq!(
        tenant, site.installation_id,
        "a new tenant is keyed by its installationId"
    );
    let stored = app.stored_tenant(&tenant).await;
    assert_eq!(stored.origin, connect_axum::store::Origin::Forge);
    assert_eq!(
        stored.installation.cloud_id.as_deref(),
        Some(site.cloud_id.as_str())
    );
    assert_eq!(stored.installation.product_type.as_deref(), Some("jira"));
    assert_eq!(stored.app_version.as_deref(), Some("1.0.0"));

    // The panel's resolver lists, adds and deletes notes of its issue.
    let user = forge.fit_on(&site).sign();
    assert_eq!(
        app.invoke("GET", &notes("PROJ-1"), &user, None)
            .await
            .json()["notes"],
        json!([])
    );
    let created = app
        .invoke(
            "POST",
            &notes("PROJ-1"),
            &user,
            Some(&json!({ "body": "on Forge alone" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["id"].as_i64().unwrap();
    let listed = app
        .invoke("GET", &notes("PROJ-1"), &user, None)
        .await
        .json()["notes"]
        .clone();
    assert_eq!(listed[0]["body"], "on Forge alone");
    assert_eq!(listed[0]["author"], "557058:forge-user");
    let gone = app
        .invoke("DELETE", &format!("{}/{id}", notes("PROJ-1")), &user, None)
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.invoke("GET", &notes("PROJ-1"), &user, None)
            .await
            .json()["notes"],
        json!([])
    );

    // A site whose licence Forge says is inactive is refused; one Forge says nothing of passes.
    let lapsed = forge
        .fit_on(&site)
        .environment("PRODUCTION", "env")
        .license(json!({ "active": false }))
        .sign();
    app.invoke("GET", &notes("PROJ-1"), &lapsed, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "unlicensed");
    let free = forge.fit_on(&site).environment("PRODUCTION", "env").sign();
    assert_eq!(
        app.invoke("GET", &notes("PROJ-1"), &free, None)
            .await
            .status,
        StatusCode::OK
    );

    // A Forge-born tenant has no sharedSecret anyone knows: no Connect JWT names it.
    let forged = hs256(
        &json!({ "iss": tenant, "iat": now(), "exp": now() + 60,
            "qsh": qsh_of("GET", "/api/issues/PROJ-1/notes") }),
        "",
    );
    app.call("GET", "/api/issues/PROJ-1/notes", Some(&forged), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unknown_tenant");
    // Nor can a Connect install claiming its key take it over: refused, the tenant unchanged.
    let mut claimant = app.tenant("claimant");
    claimant.client_key = tenant.clone();
    let takeover = app.hook(&claimant, "installed").await;
    takeover.assert_error(StatusCode::CONFLICT, "client_key_taken");
    let kept = app.stored_tenant(&tenant).await;
    assert_eq!(kept.origin, connect_axum::store::Origin::Forge);
    assert_eq!(kept.installation.base_url, stored.installation.base_url);
    assert_eq!(
        kept.installation.shared_secret.expose(),
        stored.installation.shared_secret.expose()
    );
    app.signed(&claimant, "GET", "/api/issues/PROJ-1/notes", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unknown_tenant");
    // Another Forge site sees nothing of it.
    let other = forge.site("other");
    install(&app, &forge, &other).await;
    let note = app
        .invoke(
            "POST",
            &notes("PROJ-1"),
            &user,
            Some(&json!({ "body": "mine" })),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED);
    assert_eq!(
        app.invoke("GET", &notes("PROJ-1"), &forge.fit_on(&other).sign(), None)
            .await
            .json()["notes"],
        json!([])
    );
}

async fn event_fields_are_read_at_the_top_level_or_under_payload_and_never_name_the_tenant(
    app: TestApp,
    forge: FakeForge,
) {
    let (top, nested, victim) = (
        forge.site("top"),
        forge.site("nested"),
        forge.site("victim"),
    );
    install(&app, &forge, &victim).await;
    for (site, body) in [
        (
            &top,
            json!({ "eventType": "avi:forge:installed:app",
            "installationId": victim.installation_id, "id": victim.installation_id }),
        ),
        (
            &nested,
            json!({ "payload": { "eventType": "avi:forge:installed:app",
            "installationId": victim.installation_id,
            "context": { "cloudId": victim.cloud_id } } }),
        ),
    ] {
        let response = app
            .deliver(EVENTS, &forge.trigger(site).sign(), None, &body)
            .await;
        assert_eq!(response.status, StatusCode::OK);
        // The body's installation is ignored: the token decides.
        assert_eq!(response.json()["tenant"], site.installation_id);
    }
    let listed = app
        .raw("select client_key from tenant order by client_key")
        .await;
    assert_eq!(listed.len(), 3);
    for bad in [
        json!({}),
        json!({ "payload": { "eventType": 7 } }),
        json!({ "eventType": "a b" }),
    ] {
        app.deliver(EVENTS, &forge.trigger(&top).sign(), None, &bad)
            .await
            .assert_error(
                StatusCode::BAD_REQUEST,
                if bad.get("eventType").is_some() {
                    "invalid_event_type"
                } else {
                    "missing_event_type"
                },
            );
    }
}

async fn a_redelivered_event_runs_its_handler_once(app: TestApp, forge: FakeForge) {
    let site = forge.site("acme");
    install(&app, &forge, &site).await;
    let user = forge.fit_on(&site).sign();
    let other_issue = forge
        .fit_on(&site)
        .extension(json!({ "type": "jira:issuePanel",
        "issue": { "key": "PROJ-2", "id": "10001" } }))
        .sign();
    for (issue, fit) in [("PROJ-1", &user), ("PROJ-2", &other_issue)] {
        let made = app
            .invoke(
                "POST",
                &notes(issue),
                fit,
                Some(&json!({ "body": "doomed" })),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{issue}");
    }
    let deleted = json!({ "payload": { "eventType": "avi:jira:deleted:issue",
        "issue": { "id": "10000", "key": "PROJ-1" } } });
    let first = app
        .deliver(EVENTS, &forge.trigger(&site).sign(), None, &deleted)
        .await;
    assert_eq!(first.json()["duplicate"], false);
    let retry = kit::redelivered(&deleted, 1, "TIMEOUT_ERROR");
    let again = app
        .deliver(EVENTS, &forge.trigger(&site).sign(), None, &retry)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["duplicate"], true);
    // Nothing ran yet: the delivery was answered before the handler.
    assert_eq!(
        app.invoke("GET", &notes("PROJ-1"), &user, None)
            .await
            .json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.run_forge_events().await,
        1,
        "one run for two deliveries"
    );
    assert_eq!(app.run_forge_events().await, 0);
    assert_eq!(
        app.invoke("GET", &notes("PROJ-1"), &user, None)
            .await
            .json()["notes"],
        json!([])
    );
    assert_eq!(
        app.invoke("GET", &notes("PROJ-2"), &other_issue, None)
            .await
            .json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the deleted issue's notes go"
    );
    // An event no handler wants is answered and not kept.
    let ignored = json!({ "eventType": "avi:jira:updated:issue", "issue": { "key": "PROJ-2" } });
    assert_eq!(
        app.deliver(EVENTS, &forge.trigger(&site).sign(), None, &ignored)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(app.raw("select event_type from forge_event").await.len(), 1);
    // The same token replayed changes nothing more.
    let fit = forge.trigger(&site).sign();
    for _ in 0..2 {
        assert_eq!(
            app.deliver(EVENTS, &fit, None, &installed()).await.status,
            StatusCode::OK
        );
    }
}

async fn deliveries_with_bad_tokens_or_for_no_tenant_are_refused(app: TestApp, forge: FakeForge) {
    let site = forge.site("acme");
    let event = json!({ "eventType": "avi:jira:deleted:issue", "issue": { "key": "PROJ-1" } });
    // Not installed: a verified token of an installation no tenant has is 403, never 401.
    for path in [EVENTS, SCHEDULED, PRE_UNINSTALL] {
        app.deliver(
            path,
            &forge.trigger(&site).sign(),
            Some(&kit::system_token(now() + 600)),
            &event,
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "unmapped_installation");
    }
    install(&app, &forge, &site).await;
    let expired = forge.trigger(&site).valid(now() - 600, now() - 300).sign();
    let other_app = forge
        .trigger(&site)
        .claims(json!({ "aud": "ari:cloud:ecosystem::app/someone-else" }))
        .sign();
    let unpublished_key = forge.trigger(&site).key(1).sign();
    for path in [EVENTS, SCHEDULED, PRE_UNINSTALL] {
        for (token, code) in [
            (expired.as_str(), "expired"),
            (other_app.as_str(), "invalid_audience"),
            (unpublished_key.as_str(), "unknown_kid"),
            ("garbage", "malformed_token"),
        ] {
            app.deliver(path, token, None, &installed())
                .await
                .assert_error(StatusCode::UNAUTHORIZED, code);
        }
        app.call("POST", path, None, Some(&installed()))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    }
    let not_json = app
        .send(kit::invocation(
            "POST",
            EVENTS,
            &forge.trigger(&site).sign(),
            &[],
            None,
        ))
        .await;
    not_json.assert_error(StatusCode::BAD_REQUEST, "missing_event_type");
    // Nothing was queued or changed by any of it.
    assert!(app.raw("select id from forge_event").await.is_empty());
    assert_eq!(app.raw("select client_key from tenant").await.len(), 1);
}

async fn pre_uninstall_starts_the_retention_window_and_a_reinstall_keeps_the_data(
    app: TestApp,
    forge: FakeForge,
) {
    let site = forge.site("acme");
    let tenant = install(&app, &forge, &site).await;
    let user = forge.fit_on(&site).sign();
    let made = app
        .invoke(
            "POST",
            &notes("PROJ-1"),
            &user,
            Some(&json!({ "body": "kept" })),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);

    let gone = app
        .deliver(
            PRE_UNINSTALL,
            &forge.trigger(&site).sign(),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(gone.json()["duplicate"], false);
    let stored = app.stored_tenant(&tenant).await;
    assert!(
        !stored.is_installed(),
        "uninstalled, its data kept for the retention window"
    );
    app.invoke("GET", &notes("PROJ-1"), &forge.fit_on(&site).sign(), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "tenant_uninstalled");
    // Redelivered: answered, nothing changes.
    let again = app
        .deliver(
            PRE_UNINSTALL,
            &forge.trigger(&site).sign(),
            None,
            &json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        app.stored_tenant(&tenant).await.uninstalled_at,
        stored.uninstalled_at
    );
    // An install older than the uninstall does not revive it.
    let late = forge.trigger(&site).valid(now() - 20, now() + 5).sign();
    assert_eq!(
        app.deliver(EVENTS, &late, None, &installed()).await.status,
        StatusCode::OK
    );
    assert!(!app.stored_tenant(&tenant).await.is_installed());

    // `forge install` again: a new installationId for the same site finds the same tenant.
    let back = site.reinstalled();
    assert_eq!(install(&app, &forge, &back).await, tenant);
    let revived = app.stored_tenant(&tenant).await;
    assert!(revived.is_installed());
    assert_eq!(
        revived.installation.installation_id.as_deref(),
        Some(back.installation_id.as_str())
    );
    let listed = app
        .invoke("GET", &notes("PROJ-1"), &forge.fit_on(&back).sign(), None)
        .await;
    assert_eq!(listed.json()["notes"][0]["body"], "kept");
}

async fn an_upgrade_records_the_version_and_permissions(app: TestApp, forge: FakeForge) {
    let site = forge.site("acme");
    let tenant = install(&app, &forge, &site).await;
    // A site that changed its URL keeps its tenant; the URL follows.
    for url in [
        "https://old-name.atlassian.net",
        "https://new-name.atlassian.net",
    ] {
        let fit = forge.trigger(&site).site_url(url).sign();
        let response = app.deliver(EVENTS, &fit, None, &installed()).await;
        assert_eq!(response.json()["tenant"], tenant.as_str());
        let stored = app.stored_tenant(&tenant).await;
        assert_eq!(stored.installation.base_url, url);
    }
    let upgraded = json!({ "payload": { "eventType": "avi:forge:upgraded:app",
        "upgraderAccountId": "557058:admin",
        "permissions": { "scopes": ["read:jira-work", "storage:app"] } } });
    let fit = forge.trigger(&site).app_version("2.0.0").sign();
    assert_eq!(
        app.deliver(EVENTS, &fit, None, &upgraded).await.status,
        StatusCode::OK
    );
    let stored = app.stored_tenant(&tenant).await;
    assert_eq!(stored.app_version.as_deref(), Some("2.0.0"));
    assert_eq!(
        app.raw("select forge_permissions from tenant").await,
        [Some(
            json!({ "scopes": ["read:jira-work", "storage:app"] }).to_string()
        )]
    );
}

async fn the_system_token_is_stored_sealed_and_replaced_only_by_a_newer_app_calls_one(
    app: TestApp,
    forge: FakeForge,
) {
    let site = forge.site("acme");
    let tenant = install(&app, &forge, &site).await;
    let key = key_of(&app, &tenant).await;
    let first = app
        .store()
        .forge()
        .system_token(&key)
        .await
        .unwrap()
        .expect("stored by the install");
    let sealed = app.raw("select token from forge_system_token").await;
    assert_eq!(sealed.len(), 1);
    assert_ne!(
        sealed[0].as_deref(),
        Some(first.token.expose()),
        "sealed at rest"
    );
    assert!(!sealed[0].as_deref().unwrap().contains(first.token.expose()));

    // The scheduled trigger refreshes it.
    let later_exp = now() + 4 * 3600 - 60;
    let later = kit::system_token(later_exp);
    let refreshed = app
        .deliver(
            SCHEDULED,
            &forge.trigger(&site).sign(),
            Some(&later),
            &json!({}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let stored = app
        .store()
        .forge()
        .system_token(&key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.token.expose(), later);
    assert_eq!(stored.expires_at.timestamp(), later_exp);
    assert_eq!(
        stored.api_base_url,
        format!("https://api.atlassian.com/ex/jira/{}", site.cloud_id)
    );
    // A call without a token keeps it; an older FIT's token does not replace it, whatever it
    // claims to live.
    let user = forge.fit_on(&site).sign();
    assert_eq!(
        app.invoke("GET", &notes("PROJ-1"), &user, None)
            .await
            .status,
        StatusCode::OK
    );
    let older = forge.trigger(&site).valid(now() - 20, now() + 5).sign();
    app.deliver(
        SCHEDULED,
        &older,
        Some(&kit::system_token(now() + 4 * 3600 - 30)),
        &json!({ "older": true }),
    )
    .await;
    assert_eq!(
        app.store()
            .forge()
            .system_token(&key)
            .await
            .unwrap()
            .unwrap()
            .token
            .expose(),
        later
    );
    // A scheduled trigger without a token says what is missing.
    app.deliver(SCHEDULED, &forge.trigger(&site).sign(), None, &json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "missing_system_token");
    // An expired token is not stored; an opaque one is kept for the assumed lifetime.
    let other = forge.site("opaque");
    let other_key = key_of(&app, &install(&app, &forge, &other).await).await;
    app.raw("delete from forge_system_token").await;
    app.deliver(
        SCHEDULED,
        &forge.trigger(&other).sign(),
        Some(&kit::system_token(now() - 5)),
        &json!({}),
    )
    .await;
    assert!(
        app.store()
            .forge()
            .system_token(&other_key)
            .await
            .unwrap()
            .is_none()
    );
    let opaque = kit::opaque_system_token();
    app.deliver(
        SCHEDULED,
        &forge.trigger(&other).sign(),
        Some(&opaque),
        &json!({}),
    )
    .await;
    let kept = app
        .store()
        .forge()
        .system_token(&other_key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.token.expose(), opaque);
    assert!((kept.expires_at.timestamp() - (now() + 3600)).abs() <= 5);
}

async fn a_stored_token_calls_the_product_as_the_app_outside_any_request(
    app: TestApp,
    forge: FakeForge,
) {
    let product = FakeProduct::builder("issue-notes")
        .base_path("/ex/jira/site-1")
        .start()
        .await;
    let site = forge.site("acme");
    let token = kit::system_token(now() + 3 * 3600);
    product.bearer(&token, "app-user");
    let fit = forge.trigger(&site).api_base_url(product.base_url()).sign();
    let installed = app.deliver(EVENTS, &fit, Some(&token), &installed()).await;
    let key = key_of(&app, installed.json()["tenant"].as_str().unwrap()).await;

    let stored = app.store().forge().system_token(&key).await.unwrap();
    let me: Value = app
        .state
        .product()
        .as_stored_forge_app(stored.as_ref())
        .unwrap()
        .get("/rest/api/3/myself")
        .await
        .unwrap();
    assert_eq!(me["accountId"], "app-user");
    assert_eq!(product.received().len(), 1);

    // Past its expiry: a typed error, and no call.
    app.raw("update forge_system_token set expires_at = '2020-01-01T00:00:00+00:00'")
        .await;
    let expired = app.store().forge().system_token(&key).await.unwrap();
    assert!(matches!(
        app.state.product().as_stored_forge_app(expired.as_ref()),
        Err(ProductError::SystemTokenExpired { .. })
    ));
    assert!(matches!(
        app.state.product().as_stored_forge_app(None),
        Err(ProductError::NoStoredSystemToken)
    ));
    assert_eq!(product.received().len(), 1);
}

async fn a_connect_on_forge_site_is_one_tenant_through_both_doors(app: TestApp, forge: FakeForge) {
    let connect = app.install("both").await;
    let site = ForgeSite {
        name: "both".to_owned(),
        installation_id: connect.installation_id(),
        cloud_id: connect.cloud_id(),
        product: "jira".to_owned(),
    };
    assert_eq!(install(&app, &forge, &site).await, connect.client_key);
    let stored = app.stored_tenant(&connect.client_key).await;
    assert_eq!(stored.origin, connect_axum::store::Origin::Connect);
    let made = app
        .signed(
            &connect,
            "POST",
            "/api/issues/PROJ-1/notes",
            Some(&json!({ "body": "via Connect" })),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let listed = app
        .invoke("GET", &notes("PROJ-1"), &forge.fit_on(&site).sign(), None)
        .await;
    assert_eq!(listed.json()["notes"][0]["body"], "via Connect");
    // Its Connect JWTs still work after the Forge install.
    assert_eq!(
        app.signed(&connect, "GET", "/api/issues/PROJ-1/notes", None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(app.raw("select client_key from tenant").await.len(), 1);
}

async fn forge_residency_hooks_move_the_data_on_the_same_state_machine(
    app: TestApp,
    forge: FakeForge,
) {
    let site = forge.site("acme");
    let tenant = install(&app, &forge, &site).await;
    let key = key_of(&app, &tenant).await;
    let hook = |path: &str, body: Option<Value>| {
        let fit = forge.trigger(&site).sign();
        let method = if body.is_some() { "POST" } else { "GET" };
        let target = format!("/forge/migration/{path}");
        let app = &app;
        async move { app.invoke(method, &target, &fit, body.as_ref()).await }
    };
    // Forge's migration service numbers its migrations.
    let scheduled = hook(
        "schedule",
        Some(json!({ "migrationId": 57500, "location": "EU" })),
    )
    .await;
    assert_eq!(
        scheduled.json()["status"],
        "scheduled",
        "{}",
        String::from_utf8_lossy(&scheduled.body)
    );
    let started = hook("start", Some(json!({ "migrationId": 57500 }))).await;
    assert_eq!(started.json()["status"], "ready-to-commit");
    assert_eq!(
        hook("status?migrationId=57500", None).await.json(),
        json!({ "status": "ready-to-commit", "location": "EU" })
    );
    assert_eq!(
        issue_notes::StoredLocation::read(app.store(), &key)
            .await
            .unwrap()
            .as_deref(),
        Some("EU")
    );
    // Another migration's id, as a number or as text, is not this one.
    let other = hook("commit", Some(json!({ "migrationId": 57501 }))).await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.json()["errorResponseCode"], "E0001");
    let committed = hook("commit", Some(json!({ "migrationId": "57500" }))).await;
    assert_eq!(committed.json()["status"], "committed");
    // The Forge hooks take a Forge token only; the Connect ones a Connect JWT only.
    app.call(
        "POST",
        "/forge/migration/schedule",
        None,
        Some(&json!({ "migrationId": 1, "location": "EU" })),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    app.invoke(
        "POST",
        "/migration/schedule",
        &forge.trigger(&site).sign(),
        Some(&json!({ "migrationId": 1, "location": "EU" })),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unsupported_scheme");
    let bad = hook("start", Some(json!({ "migrationId": [1] }))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

async fn a_forge_tenant_past_its_retention_is_purged_with_everything_it_had(
    app: TestApp,
    forge: FakeForge,
) {
    let (gone, kept) = (forge.site("gone"), forge.site("kept"));
    for site in [&gone, &kept] {
        install(&app, &forge, site).await;
        let made = app
            .invoke(
                "POST",
                &notes("PROJ-1"),
                &forge.fit_on(site).sign(),
                Some(&json!({ "body": "n" })),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED);
        let event = json!({ "eventType": "avi:jira:deleted:issue", "issue": { "key": "PROJ-9" } });
        app.deliver(EVENTS, &forge.trigger(site).sign(), None, &event)
            .await;
    }
    app.deliver(
        PRE_UNINSTALL,
        &forge.trigger(&gone).sign(),
        None,
        &json!({}),
    )
    .await;
    let purged = connect_axum::retention::purge_due(app.store(), std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].client_key.as_str(), gone.installation_id);
    for table in ["tenant", "note", "forge_system_token", "forge_event"] {
        assert_eq!(
            app.raw(&format!("select client_key from {table}")).await,
            [Some(kept.installation_id.clone())],
            "{table}"
        );
    }
}

on_both_stores!(
    app = sample(),
    with = crate::forge::trusting_forge,
    a_forge_tenant_past_its_retention_is_purged_with_everything_it_had,
    forge_residency_hooks_move_the_data_on_the_same_state_machine,
    the_sample_lives_on_forge_alone,
    event_fields_are_read_at_the_top_level_or_under_payload_and_never_name_the_tenant,
    a_redelivered_event_runs_its_handler_once,
    deliveries_with_bad_tokens_or_for_no_tenant_are_refused,
    pre_uninstall_starts_the_retention_window_and_a_reinstall_keeps_the_data,
    an_upgrade_records_the_version_and_permissions,
    the_system_token_is_stored_sealed_and_replaced_only_by_a_newer_app_calls_one,
    a_stored_token_calls_the_product_as_the_app_outside_any_request,
    a_connect_on_forge_site_is_one_tenant_through_both_doors,
);

/// A Connect-on-Forge app (`FORGE_CONNECT_ON_FORGE`): Forge's install event may come before the
/// Connect install; it is sent back until the Connect install has made the tenant, and only its
/// last retry makes a Forge-born one.
async fn a_connect_on_forge_install_event_waits_for_the_connect_install(postgres: bool) {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let vars = forge.vars();
    let vars = move |name: &str| match name {
        "FORGE_CONNECT_ON_FORGE" => Some("true".to_owned()),
        _ => vars(name),
    };
    let app = if postgres {
        <TestApp as SampleApp>::postgres_with(vars).await
    } else {
        <TestApp as SampleApp>::sqlite_with(vars).await
    };
    let connect = app.tenant("both");
    let site = ForgeSite {
        name: "both".to_owned(),
        installation_id: connect.installation_id(),
        cloud_id: connect.cloud_id(),
        product: "jira".to_owned(),
    };
    app.deliver(EVENTS, &forge.trigger(&site).sign(), None, &installed())
        .await
        .assert_error(StatusCode::CONFLICT, "connect_install_pending");
    assert!(app.raw("select client_key from tenant").await.is_empty());
    let connect = app.install_tenant(connect).await;
    let retry = kit::redelivered(&installed(), 1, "INVALID_REMOTE_INVOCATION_ERROR");
    let taken = app
        .deliver(EVENTS, &forge.trigger(&site).sign(), None, &retry)
        .await;
    assert_eq!(taken.status, StatusCode::OK);
    assert_eq!(taken.json()["tenant"], connect.client_key.as_str());
    // No Connect install ever comes for this one: the last retry makes its tenant.
    let alone = forge.site("alone");
    for count in [1, 3] {
        let retry = kit::redelivered(&installed(), count, "INVALID_REMOTE_INVOCATION_ERROR");
        app.deliver(EVENTS, &forge.trigger(&alone).sign(), None, &retry)
            .await
            .assert_error(StatusCode::CONFLICT, "connect_install_pending");
    }
    let last = kit::redelivered(&installed(), 4, "INVALID_REMOTE_INVOCATION_ERROR");
    let made = app
        .deliver(EVENTS, &forge.trigger(&alone).sign(), None, &last)
        .await;
    assert_eq!(made.json()["tenant"], alone.installation_id.as_str());
    assert_eq!(app.raw("select client_key from tenant").await.len(), 2);
}

on_both_stores!(
    postgres: bool,
    a_connect_on_forge_install_event_waits_for_the_connect_install
);
