//! The issue-notes API: behaviour, validation, and isolation between tenants.

use axum::http::StatusCode;
use connect_axum_testing::on_both_stores;
use serde_json::json;

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

async fn notes_are_created_and_listed_oldest_first(app: TestApp) {
    let a = app.install("a").await;
    let first = app
        .signed(&a, "POST", NOTES, Some(&json!({ "body": "first" })))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let first = first.json();
    assert_eq!(first["issueKey"], "PROJ-1");
    assert_eq!(first["body"], "first");
    assert_eq!(first["author"], "557058:account-id");
    assert!(first["id"].is_i64());
    assert!(first["createdAt"].is_string());
    app.signed(&a, "POST", NOTES, Some(&json!({ "body": "second" })))
        .await;
    app.signed(
        &a,
        "POST",
        "/api/issues/PROJ-2/notes",
        Some(&json!({ "body": "elsewhere" })),
    )
    .await;
    let listed = app.signed(&a, "GET", NOTES, None).await.json()["notes"].clone();
    let bodies: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["first", "second"]);
    assert_eq!(listed[0], first);
}

async fn notes_without_a_user_have_no_author(app: TestApp) {
    let a = app.install("a").await;
    let token = a.token_with(json!({ "qsh": qsh_of("POST", NOTES), "sub": null }));
    let created = app
        .call(
            "POST",
            NOTES,
            Some(&token),
            Some(&json!({ "body": "from the app" })),
        )
        .await;
    assert_eq!(created.json()["author"], serde_json::Value::Null);
}

async fn bodies_round_trip_exactly(app: TestApp) {
    let a = app.install("a").await;
    for body in [
        "héllo wörld",
        "🦀🎉 emoji",
        "  spaced\n\tlines  ",
        "<script>alert(1)</script>",
        "'; drop table note; --",
    ] {
        let created = app
            .signed(&a, "POST", NOTES, Some(&json!({ "body": body })))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{body:?}");
        assert_eq!(created.json()["body"], body);
    }
    let listed = app.signed(&a, "GET", NOTES, None).await.json()["notes"].clone();
    assert_eq!(listed[1]["body"], "🦀🎉 emoji");
    assert_eq!(listed.as_array().unwrap().len(), 5);
}

async fn note_length_is_counted_in_characters(app: TestApp) {
    let a = app.install("a").await;
    let longest = "🦀".repeat(10_000);
    assert_eq!(
        app.signed(&a, "POST", NOTES, Some(&json!({ "body": longest })))
            .await
            .status,
        StatusCode::CREATED
    );
    for body in [String::new(), "x".repeat(10_001), "a\u{0}b".to_owned()] {
        app.signed(&a, "POST", NOTES, Some(&json!({ "body": body })))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_note");
    }
    assert_eq!(
        app.signed(&a, "GET", NOTES, None).await.json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn malformed_note_requests_are_bad_requests(app: TestApp) {
    let a = app.install("a").await;
    for body in [json!({}), json!({ "body": 5 }), json!([1]), json!("text")] {
        app.signed(&a, "POST", NOTES, Some(&body))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    }
    let token = a.token("POST", NOTES);
    let request = axum::http::Request::post(NOTES)
        .header("authorization", format!("JWT {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"body\": "))
        .unwrap();
    app.send(request)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    let request = axum::http::Request::post(NOTES)
        .header("authorization", format!("JWT {token}"))
        .header("content-type", "text/plain")
        .body(axum::body::Body::from("hello"))
        .unwrap();
    app.send(request)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
}

async fn invalid_issue_keys_are_bad_requests(app: TestApp) {
    let a = app.install("a").await;
    for key in [
        "proj-1",
        "PROJ",
        "P-1",
        "1PROJ-1",
        "PROJ-1a",
        "PROJ-%F0%9F%A6%80",
    ] {
        let target = format!("/api/issues/{key}/notes");
        app.signed(&a, "GET", &target, None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_issue_key");
        app.signed(&a, "POST", &target, Some(&json!({ "body": "x" })))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_issue_key");
    }
}

async fn notes_are_deleted_by_id_and_missing_ones_are_not_found(app: TestApp) {
    let a = app.install("a").await;
    let id = app
        .signed(&a, "POST", NOTES, Some(&json!({ "body": "x" })))
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    app.signed(
        &a,
        "DELETE",
        &format!("/api/issues/PROJ-2/notes/{id}"),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.signed(&a, "DELETE", &format!("{NOTES}/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.signed(&a, "DELETE", &format!("{NOTES}/{id}"), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.signed(&a, "DELETE", &format!("{NOTES}/not-a-number"), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_note_id");
    assert_eq!(
        app.signed(&a, "GET", NOTES, None).await.json()["notes"],
        json!([])
    );
}

async fn tenants_see_and_delete_only_their_own_notes(app: TestApp) {
    let a = app.install("a").await;
    let b = app.install("b").await;
    // Ids are numbered per tenant: a's note on PROJ-1 is its third, b's its first.
    for body in ["a's first", "a's second"] {
        app.signed(
            &a,
            "POST",
            "/api/issues/PROJ-2/notes",
            Some(&json!({ "body": body })),
        )
        .await;
    }
    let a_note = app
        .signed(&a, "POST", NOTES, Some(&json!({ "body": "a's note" })))
        .await
        .json();
    let b_note = app
        .signed(&b, "POST", NOTES, Some(&json!({ "body": "b's note" })))
        .await
        .json();

    let a_list = app.signed(&a, "GET", NOTES, None).await.json()["notes"].clone();
    let b_list = app.signed(&b, "GET", NOTES, None).await.json()["notes"].clone();
    assert_eq!(a_list, json!([a_note.clone()]));
    assert_eq!(b_list, json!([b_note.clone()]));

    let a_id = a_note["id"].as_i64().unwrap();
    assert_eq!((a_id, b_note["id"].as_i64().unwrap()), (3, 1));
    app.signed(&b, "DELETE", &format!("{NOTES}/{a_id}"), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.signed(&a, "GET", NOTES, None).await.json()["notes"],
        json!([a_note])
    );

    assert_eq!(
        app.hook(&a, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    app.signed(&a, "GET", NOTES, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "tenant_uninstalled");
    assert_eq!(
        app.signed(&b, "GET", NOTES, None).await.json()["notes"],
        json!([b_note])
    );
}

async fn a_reinstall_keeps_the_tenants_notes(app: TestApp) {
    let a = app.install("a").await;
    app.signed(&a, "POST", NOTES, Some(&json!({ "body": "kept" })))
        .await;
    app.hook(&a, "uninstalled").await;
    app.hook(&a, "installed").await;
    assert_eq!(
        app.signed(&a, "GET", NOTES, None).await.json()["notes"][0]["body"],
        "kept"
    );
}

on_both_stores!(
    app = sample(),
    notes_are_created_and_listed_oldest_first,
    notes_without_a_user_have_no_author,
    bodies_round_trip_exactly,
    note_length_is_counted_in_characters,
    malformed_note_requests_are_bad_requests,
    invalid_issue_keys_are_bad_requests,
    notes_are_deleted_by_id_and_missing_ones_are_not_found,
    tenants_see_and_delete_only_their_own_notes,
    a_reinstall_keeps_the_tenants_notes,
);

const WEBHOOK: &str = "/webhooks/issue-deleted";

fn issue_deleted(key: &str) -> serde_json::Value {
    json!({
        "webhookEvent": "jira:issue_deleted",
        "timestamp": 1_700_000_000_000_i64,
        "user": { "accountId": "557058:account-id", "accountType": "atlassian", "active": true },
        "issue": { "id": "10001", "key": key, "self": "https://a.atlassian.net/rest/api/2/issue/10001", "fields": {} }
    })
}

async fn issue_deleted_webhook_removes_only_that_tenants_notes_on_that_issue(app: TestApp) {
    let a = app.install("a").await;
    let b = app.install("b").await;
    for tenant in [&a, &b] {
        app.signed(tenant, "POST", NOTES, Some(&json!({ "body": "on PROJ-1" })))
            .await;
        app.signed(
            tenant,
            "POST",
            "/api/issues/PROJ-2/notes",
            Some(&json!({ "body": "on PROJ-2" })),
        )
        .await;
    }
    let response = app
        .signed(&a, "POST", WEBHOOK, Some(&issue_deleted("PROJ-1")))
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.signed(&a, "GET", NOTES, None).await.json()["notes"],
        json!([])
    );
    assert_eq!(
        app.signed(&a, "GET", "/api/issues/PROJ-2/notes", None)
            .await
            .json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.signed(&b, "GET", NOTES, None).await.json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let again = app
        .signed(&a, "POST", WEBHOOK, Some(&issue_deleted("PROJ-1")))
        .await;
    assert_eq!(
        again.status,
        StatusCode::NO_CONTENT,
        "a repeated delivery is harmless"
    );
}

async fn issue_deleted_webhook_with_a_bad_token_deletes_nothing(app: TestApp) {
    let a = app.install("a").await;
    app.signed(&a, "POST", NOTES, Some(&json!({ "body": "keep me" })))
        .await;
    let body = issue_deleted("PROJ-1");
    let tampered = {
        let token = a.token("POST", WEBHOOK);
        let (rest, _) = token.rsplit_once('.').unwrap();
        format!("{rest}.AAAA")
    };
    for (token, code) in [
        (Some(tampered), "bad_signature"),
        (Some(a.token("POST", NOTES)), "qsh_mismatch"),
        (
            Some(a.token_with(json!({ "qsh": "context-qsh" }))),
            "context_token_not_allowed",
        ),
        (None, "missing_token"),
    ] {
        app.call("POST", WEBHOOK, token.as_deref(), Some(&body))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, code);
    }
    let session = app
        .call("GET", NOTES, Some(&a.context_token("PROJ-1")), None)
        .await
        .headers["x-acpt"]
        .to_str()
        .unwrap()
        .to_owned();
    app.call("POST", WEBHOOK, Some(&session), Some(&body))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "context_token_not_allowed");
    assert_eq!(
        app.signed(&a, "GET", NOTES, None).await.json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn issue_deleted_webhook_with_a_bad_body_is_a_bad_request(app: TestApp) {
    let a = app.install("a").await;
    app.signed(
        &a,
        "POST",
        WEBHOOK,
        Some(&json!({ "webhookEvent": "jira:issue_deleted" })),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    app.signed(&a, "POST", WEBHOOK, Some(&issue_deleted("not a key")))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_issue_key");
}

on_both_stores!(
    app = sample(),
    issue_deleted_webhook_removes_only_that_tenants_notes_on_that_issue,
    issue_deleted_webhook_with_a_bad_token_deletes_nothing,
    issue_deleted_webhook_with_a_bad_body_is_a_bad_request,
);
