//! What each token may reach on the notes API: a user's token (the panel's session token, a Jira
//! context token, a Forge UI invocation) one issue and its user's own notes; the site's product
//! JWT and the app's own Forge invocations every issue and note. Session tokens keep their scope
//! and the time their chain began when renewed, and a chain ends after its lifetime.

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_axum_testing::FakeForge;
use connect_axum_testing::on_both_stores;
use serde_json::{Value, json};

use crate::forge::fit;
use crate::helpers::*;

const P1: &str = "/api/issues/PROJ-1/notes";
const P2: &str = "/api/issues/PROJ-2/notes";
const USER: &str = "557058:account-id";
const SOMEONE_ELSE: &str = "557058:someone-else";

/// The claims of a token, read without verifying it.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A Jira context token's `context` naming `key`, as Atlassian documents it.
fn jira_issue(key: &str) -> Value {
    json!({ "jira": {
        "issue": { "key": key, "id": "10000", "issuetype": { "id": "10002" } },
        "project": { "key": "PROJ", "id": "10001" } } })
}

/// A context token as `AP.context.getToken()` gets it, with `extra` claims (null removes one).
fn context_token(tenant: &TestTenant, mut extra: Value) -> String {
    extra["qsh"] = "context-qsh".into();
    tenant.token_with(extra)
}

/// A session token signed as the app signs them, for PROJ-1 by default, with `extra` claims.
fn session_token(tenant: &TestTenant, extra: Value) -> String {
    let claims = json!({
        "iss": APP_KEY,
        "aud": tenant.client_key,
        "sub": USER,
        "iat": now(),
        "exp": now() + 900,
        "qsh": "context-qsh",
        "context": { "jira": { "issue": { "key": "PROJ-1" } } },
        "auth_time": now(),
    });
    hs256(&with_overrides(claims, extra), &tenant.secret)
}

/// The session token the panel of `issue` embeds, loaded by `sub`.
async fn panel_token(app: &TestApp, tenant: &TestTenant, issue: &str, sub: &str) -> String {
    let target = format!("/issue-notes?issueKey={issue}&lic=none");
    let jwt = tenant.token_with(json!({ "qsh": qsh_of("GET", &target), "sub": sub }));
    let page = app
        .call("GET", &format!("{target}&jwt={jwt}"), None, None)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8(page.body).unwrap();
    html.split("data-token=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// Adds a note on `target` through the site's own JWT, as `sub` (null: no user); its id.
async fn seed(app: &TestApp, tenant: &TestTenant, target: &str, sub: Value) -> i64 {
    let token = tenant.token_with(json!({ "qsh": qsh_of("POST", target), "sub": sub }));
    let created = app
        .call(
            "POST",
            target,
            Some(&token),
            Some(&json!({ "body": "seeded" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    created.json()["id"].as_i64().unwrap()
}

/// The ids of the tenant's notes on `target`, as the site sees them.
async fn ids(app: &TestApp, tenant: &TestTenant, target: &str) -> Vec<i64> {
    let listed = app.signed(tenant, "GET", target, None).await.json()["notes"].clone();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

/// Asserts that `token` may neither list, add to nor delete note `id` of `target` (403 `reason`)
/// and gets no session token back.
async fn refused_on(app: &TestApp, token: &str, target: &str, id: i64, reason: &str) {
    for (method, path, body) in [
        ("GET", target.to_owned(), None),
        (
            "POST",
            target.to_owned(),
            Some(json!({ "body": "sneaked in" })),
        ),
        ("DELETE", format!("{target}/{id}"), None),
    ] {
        let response = app.call(method, &path, Some(token), body.as_ref()).await;
        response.assert_error(StatusCode::FORBIDDEN, reason);
        assert!(!response.headers.contains_key("x-acpt"), "{method} {path}");
    }
}

fn lifetime_600(name: &str) -> Option<String> {
    (name == "SESSION_MAX_LIFETIME_SECS").then(|| "600".to_owned())
}

async fn a_panels_session_token_reaches_its_issue_and_no_other(app: TestApp) {
    let a = app.install("a").await;
    let elsewhere = seed(&app, &a, P2, json!(USER)).await;
    let session = panel_token(&app, &a, "PROJ-1", USER).await;
    assert_eq!(
        claims(&session)["context"]["jira"]["issue"]["key"],
        "PROJ-1"
    );
    refused_on(&app, &session, P2, elsewhere, "issue_not_allowed").await;
    assert_eq!(ids(&app, &a, P2).await, [elsewhere], "PROJ-2 is untouched");

    let created = app
        .call("POST", P1, Some(&session), Some(&json!({ "body": "mine" })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["id"].as_i64().unwrap();
    let listed = app.call("GET", P1, Some(&session), None).await;
    assert_eq!(listed.json()["notes"][0]["id"], id);
    assert_eq!(
        app.call("DELETE", &format!("{P1}/{id}"), Some(&session), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

async fn a_context_token_reaches_only_the_issue_its_context_names(app: TestApp) {
    let a = app.install("a").await;
    let elsewhere = seed(&app, &a, P2, json!(USER)).await;
    let token = context_token(&a, json!({ "context": jira_issue("PROJ-1") }));
    let created = app
        .call("POST", P1, Some(&token), Some(&json!({ "body": "hi" })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        app.call("GET", P1, Some(&token), None).await.status,
        StatusCode::OK
    );
    refused_on(&app, &token, P2, elsewhere, "issue_not_allowed").await;
    // A prefix of the key is another issue.
    let ten = "/api/issues/PROJ-10/notes";
    app.call("GET", ten, Some(&token), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "issue_not_allowed");
    assert_eq!(ids(&app, &a, P2).await, [elsewhere]);
}

async fn a_context_or_session_token_naming_no_issue_is_refused_on_issue_routes(app: TestApp) {
    let a = app.install("a").await;
    let id = seed(&app, &a, P1, json!(USER)).await;
    for token in [
        context_token(&a, json!({})),
        context_token(
            &a,
            json!({ "context": { "jira": { "project": { "key": "PROJ", "id": "10001" } } } }),
        ),
        context_token(
            &a,
            json!({ "context": { "jira": { "issue": { "id": "10000" } } } }),
        ),
        context_token(
            &a,
            json!({ "context": { "confluence": { "content": { "id": "1" } } } }),
        ),
        session_token(&a, json!({ "context": null })),
    ] {
        refused_on(&app, &token, P1, id, "issue_not_in_token").await;
    }
    assert_eq!(ids(&app, &a, P1).await, [id]);
}

async fn a_user_deletes_their_own_notes_and_no_one_elses(app: TestApp) {
    let a = app.install("a").await;
    let session = panel_token(&app, &a, "PROJ-1", USER).await;
    let mine = app
        .call("POST", P1, Some(&session), Some(&json!({ "body": "mine" })))
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let theirs = seed(&app, &a, P1, json!(SOMEONE_ELSE)).await;
    let nobodys = seed(&app, &a, P1, Value::Null).await;
    for id in [theirs, nobodys] {
        app.call("DELETE", &format!("{P1}/{id}"), Some(&session), None)
            .await
            .assert_error(StatusCode::FORBIDDEN, "not_note_author");
    }
    let context = context_token(&a, json!({ "context": jira_issue("PROJ-1") }));
    app.call("DELETE", &format!("{P1}/{theirs}"), Some(&context), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "not_note_author");
    assert_eq!(
        ids(&app, &a, P1).await,
        [mine, theirs, nobodys],
        "nothing was deleted"
    );

    // A user's token without a user deletes nothing, not even a note without an author.
    let anonymous = context_token(&a, json!({ "context": jira_issue("PROJ-1"), "sub": null }));
    for id in [mine, theirs, nobodys] {
        app.call("DELETE", &format!("{P1}/{id}"), Some(&anonymous), None)
            .await
            .assert_error(StatusCode::FORBIDDEN, "not_note_author");
    }
    assert_eq!(ids(&app, &a, P1).await, [mine, theirs, nobodys]);

    assert_eq!(
        app.call("DELETE", &format!("{P1}/{mine}"), Some(&session), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.call("DELETE", &format!("{P1}/{mine}"), Some(&session), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(ids(&app, &a, P1).await, [theirs, nobodys]);
}

async fn a_product_jwt_reaches_every_issue_and_note_and_gets_no_session_token(app: TestApp) {
    let a = app.install("a").await;
    let on_p1 = seed(&app, &a, P1, json!(SOMEONE_ELSE)).await;
    let on_p2 = seed(&app, &a, P2, json!(SOMEONE_ELSE)).await;
    for (target, id) in [(P1, on_p1), (P2, on_p2)] {
        let listed = app.signed(&a, "GET", target, None).await;
        assert_eq!(listed.json()["notes"][0]["id"], id);
        assert!(
            !listed.headers.contains_key("x-acpt"),
            "a product JWT is never made a session"
        );
    }
    let deleted = app
        .signed(&a, "DELETE", &format!("{P2}/{on_p2}"), None)
        .await;
    assert_eq!(
        deleted.status,
        StatusCode::NO_CONTENT,
        "the site deletes another user's note"
    );
    assert!(!deleted.headers.contains_key("x-acpt"));
    let target = format!("{P1}/{on_p1}");
    let no_user = a.token_with(json!({ "qsh": qsh_of("DELETE", &target), "sub": null }));
    assert_eq!(
        app.call("DELETE", &target, Some(&no_user), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(ids(&app, &a, P1).await.is_empty());
    assert!(ids(&app, &a, P2).await.is_empty());
}

async fn a_renewal_keeps_the_issue_the_user_and_the_time_the_chain_began(app: TestApp) {
    let a = app.install("a").await;
    let first = panel_token(&app, &a, "PROJ-1", USER).await;
    let began = claims(&first)["auth_time"]
        .as_i64()
        .expect("the panel's token says when its chain began");
    assert!(
        (now() - began).abs() <= 5,
        "the chain begins at the page load"
    );

    let answer = app.call("GET", P1, Some(&first), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let renewed = answer.headers["x-acpt"].to_str().unwrap().to_owned();
    let (before, after) = (claims(&first), claims(&renewed));
    for claim in ["context", "auth_time", "sub", "iss", "aud", "qsh"] {
        assert_eq!(after[claim], before[claim], "{claim}");
    }
    let elsewhere = seed(&app, &a, P2, json!(USER)).await;
    refused_on(&app, &renewed, P2, elsewhere, "issue_not_allowed").await;

    // An older chain keeps its start through every renewal.
    let hour_ago = now() - 3600;
    let mut token = session_token(&a, json!({ "auth_time": hour_ago }));
    for _ in 0..3 {
        let answer = app.call("GET", P1, Some(&token), None).await;
        assert_eq!(answer.status, StatusCode::OK);
        token = answer.headers["x-acpt"].to_str().unwrap().to_owned();
        assert_eq!(claims(&token)["auth_time"], hour_ago);
        assert_eq!(claims(&token)["context"]["jira"]["issue"]["key"], "PROJ-1");
    }

    // A context token begins a chain at its iat, and its renewal keeps its context.
    let issued = now() - 60;
    let context = context_token(
        &a,
        json!({ "context": jira_issue("PROJ-1"), "iat": issued }),
    );
    let answer = app.call("GET", P1, Some(&context), None).await;
    let renewed = claims(answer.headers["x-acpt"].to_str().unwrap());
    assert_eq!(renewed["context"], jira_issue("PROJ-1"));
    assert_eq!(renewed["auth_time"], issued);
    assert_eq!(renewed["sub"], USER);
}

async fn a_session_chain_older_than_the_default_eight_hours_is_refused(app: TestApp) {
    let a = app.install("a").await;
    let expired = session_token(&a, json!({ "auth_time": now() - 8 * 3600 - 60 }));
    let response = app.call("GET", P1, Some(&expired), None).await;
    response.assert_error(StatusCode::UNAUTHORIZED, "session_expired");
    assert!(!response.headers.contains_key("x-acpt"));
    let late = session_token(&a, json!({ "auth_time": now() - 8 * 3600 + 60 }));
    let answer = app.call("GET", P1, Some(&late), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let exp = claims(answer.headers["x-acpt"].to_str().unwrap())["exp"]
        .as_i64()
        .unwrap();
    assert!(
        exp <= now() + 61,
        "the last renewal ends with the chain, not 15 minutes on: {exp}"
    );
}

on_both_stores!(
    app = sample(),
    a_panels_session_token_reaches_its_issue_and_no_other,
    a_context_token_reaches_only_the_issue_its_context_names,
    a_context_or_session_token_naming_no_issue_is_refused_on_issue_routes,
    a_user_deletes_their_own_notes_and_no_one_elses,
    a_product_jwt_reaches_every_issue_and_note_and_gets_no_session_token,
    a_renewal_keeps_the_issue_the_user_and_the_time_the_chain_began,
    a_session_chain_older_than_the_default_eight_hours_is_refused,
);

async fn a_session_chain_ends_after_session_max_lifetime_secs(app: TestApp) {
    let a = app.install("a").await;
    let id = seed(&app, &a, P1, json!(USER)).await;
    let began = now() - 601;
    let expired = session_token(&a, json!({ "auth_time": began }));
    for (method, path, body) in [
        ("GET", P1.to_owned(), None),
        ("POST", P1.to_owned(), Some(json!({ "body": "too late" }))),
        ("DELETE", format!("{P1}/{id}"), None),
    ] {
        let response = app.call(method, &path, Some(&expired), body.as_ref()).await;
        response.assert_error(StatusCode::UNAUTHORIZED, "session_expired");
        assert!(
            !response.headers.contains_key("x-acpt"),
            "{method}: no renewal past the lifetime"
        );
    }
    assert_eq!(
        ids(&app, &a, P1).await,
        [id],
        "nothing was added or deleted"
    );

    // A context token whose chain began as long ago is over as well.
    let old_context = context_token(&a, json!({ "context": jira_issue("PROJ-1"), "iat": began }));
    app.call("GET", P1, Some(&old_context), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "session_expired");

    // Within the lifetime the renewal is capped at the chain's end.
    let began = now() - 590;
    let late = session_token(&a, json!({ "auth_time": began }));
    let answer = app.call("GET", P1, Some(&late), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let renewed = claims(answer.headers["x-acpt"].to_str().unwrap());
    assert_eq!(renewed["auth_time"], began);
    assert!(renewed["exp"].as_i64().unwrap() <= began + 600);

    // Every session token says when its chain began.
    let undated = session_token(&a, json!({ "auth_time": null }));
    app.call("GET", P1, Some(&undated), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_claim");
}

on_both_stores!(
    app = sample(),
    #[multi_thread(vars = lifetime_600)]
    a_session_chain_ends_after_session_max_lifetime_secs,
);

const FORGE_P1: &str = "/forge/api/issues/PROJ-1/notes";
const FORGE_P2: &str = "/forge/api/issues/PROJ-2/notes";

async fn a_forge_ui_invocation_reaches_its_issue_and_deletes_only_its_principals_notes(
    app: TestApp,
    jwks: FakeForge,
) {
    let a = app.install("a").await;
    let theirs = seed(&app, &a, P1, json!(SOMEONE_ELSE)).await;
    let elsewhere = seed(&app, &a, P2, json!(SOMEONE_ELSE)).await;
    let user = || fit(0, &a, json!({}));
    assert_eq!(
        app.invoke("GET", FORGE_P1, &user(), None).await.status,
        StatusCode::OK
    );
    for (method, path, body) in [
        ("GET", FORGE_P2.to_owned(), None),
        (
            "POST",
            FORGE_P2.to_owned(),
            Some(json!({ "body": "sneaked in" })),
        ),
        ("DELETE", format!("{FORGE_P2}/{elsewhere}"), None),
    ] {
        app.invoke(method, &path, &user(), body.as_ref())
            .await
            .assert_error(StatusCode::FORBIDDEN, "issue_not_allowed");
    }
    app.invoke("DELETE", &format!("{FORGE_P1}/{theirs}"), &user(), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "not_note_author");
    let mine = app
        .invoke("POST", FORGE_P1, &user(), Some(&json!({ "body": "mine" })))
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        app.invoke("DELETE", &format!("{FORGE_P1}/{mine}"), &user(), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ids(&app, &a, P1).await, [theirs]);
    assert_eq!(ids(&app, &a, P2).await, [elsewhere]);

    // A user's invocation whose context names no issue reaches none.
    let no_issue = fit(
        0,
        &a,
        json!({ "context": { "localId": "x", "extension": { "type": "jira:globalPage" } } }),
    );
    app.invoke("GET", FORGE_P1, &no_issue, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "issue_not_in_token");
    let no_context = fit(0, &a, json!({ "context": null }));
    app.invoke("GET", FORGE_P1, &no_context, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "issue_not_in_token");
    // A UI invocation without a principal (an anonymous viewer) is still a view: its issue
    // only, and no note to delete.
    let anonymous = fit(0, &a, json!({ "principal": null }));
    app.invoke("GET", FORGE_P2, &anonymous, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "issue_not_allowed");
    app.invoke("DELETE", &format!("{FORGE_P1}/{theirs}"), &anonymous, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "not_note_author");
    assert_eq!(ids(&app, &a, P1).await, [theirs]);
    let _ = jwks;
}

async fn an_app_level_forge_invocation_reaches_every_issue_and_note(app: TestApp, jwks: FakeForge) {
    let a = app.install("a").await;
    let theirs = seed(&app, &a, P1, json!(SOMEONE_ELSE)).await;
    let elsewhere = seed(&app, &a, P2, json!(SOMEONE_ELSE)).await;
    let app_level = || {
        connect_axum_testing::forge::Fit::new(super::forge::APP_ARI, &a)
            .module("core:endpoint", "lifecycle")
            .claims(json!({ "principal": null, "context": null }))
            .sign()
    };
    assert_eq!(
        app.invoke("GET", FORGE_P2, &app_level(), None).await.json()["notes"][0]["id"],
        elsewhere
    );
    assert_eq!(
        app.invoke(
            "DELETE",
            &format!("{FORGE_P1}/{theirs}"),
            &app_level(),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.invoke(
            "DELETE",
            &format!("{FORGE_P2}/{elsewhere}"),
            &app_level(),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert!(ids(&app, &a, P1).await.is_empty());
    assert!(ids(&app, &a, P2).await.is_empty());
    let _ = jwks;
}

on_both_stores!(
    app = sample(),
    with = crate::forge::trusting_forge,
    a_forge_ui_invocation_reaches_its_issue_and_deletes_only_its_principals_notes,
    an_app_level_forge_invocation_reaches_every_issue_and_note,
);
