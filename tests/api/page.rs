//! The issue panel page served into Jira's iframe.

use axum::http::StatusCode;
use connect_axum_testing::on_both_stores;
use serde_json::json;

use crate::helpers::*;

/// The page URL as Jira builds it: the module URL plus Jira's own parameters, signed in `jwt`.
fn page_url(tenant: &TestTenant, issue_key: &str) -> String {
    let target = format!(
        "/issue-notes?issueKey={issue_key}&xdm_e=https%3A%2F%2Fa.atlassian.net&xdm_c=channel-1&cp=&xdm_deprecated_addon_key_do_not_use=x&lic=none&cv=1001.0.0"
    );
    let token = tenant.token("GET", &target);
    format!("{target}&jwt={token}")
}

async fn the_panel_page_is_served_with_a_valid_query_token(app: TestApp) {
    let a = app.install("a").await;
    let response = app.call("GET", &page_url(&a, "PROJ-1"), None, None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = response.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("frame-ancestors https://a.atlassian.net"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(response.headers["referrer-policy"], "no-referrer");
    let html = String::from_utf8(response.body.clone()).unwrap();
    assert!(html.contains("https://a.atlassian.net/atlassian-connect/all.js"));
    assert!(html.contains("Notes on PROJ-1"));
    assert!(html.contains(r#"data-api="/api/issues/PROJ-1/notes""#));
}

async fn the_pages_session_token_works_on_the_notes_api(app: TestApp) {
    let a = app.install("a").await;
    let html = String::from_utf8(
        app.call("GET", &page_url(&a, "PROJ-1"), None, None)
            .await
            .body,
    )
    .unwrap();
    let token = html
        .split("data-token=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let created = app
        .call(
            "POST",
            "/api/issues/PROJ-1/notes",
            Some(token),
            Some(&json!({ "body": "from the panel" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["author"], "557058:account-id");
}

async fn the_panel_page_refuses_bad_tokens_and_keys(app: TestApp) {
    let a = app.install("a").await;
    let context = a.token_with(json!({ "qsh": "context-qsh" }));
    app.call(
        "GET",
        &format!("/issue-notes?issueKey=PROJ-1&jwt={context}"),
        None,
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "context_token_not_allowed");
    let url = page_url(&a, "PROJ-1").replace("issueKey=PROJ-1", "issueKey=PROJ-2");
    app.call("GET", &url, None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
    app.call("GET", "/issue-notes?issueKey=PROJ-1", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    let bad = page_url(&a, "%3Cscript%3E");
    app.call("GET", &bad, None, None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_issue_key");
    let target = "/issue-notes?lic=none";
    let token = a.token("GET", target);
    app.call("GET", &format!("{target}&jwt={token}"), None, None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
}

on_both_stores!(
    app = sample(),
    the_panel_page_is_served_with_a_valid_query_token,
    the_pages_session_token_works_on_the_notes_api,
    the_panel_page_refuses_bad_tokens_and_keys,
);
