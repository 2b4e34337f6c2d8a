//! The notes routes' own authentication: a note posted as a form with its token in a field, and
//! context tokens on the notes routes. The JWT contract itself (every way a token can be wrong,
//! the session token, the limits on verified requests) is the library's:
//! crates/connect-axum/tests/api/auth.rs.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use connect_axum_testing::on_both_stores;
use serde_json::json;

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

async fn a_valid_form_field_token_is_accepted(app: TestApp) {
    let a = app.install("a").await;
    let token = a.token("POST", NOTES);
    let request = Request::post(NOTES)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("body=from+a+form&jwt={token}")))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.json()["body"], "from a form");
}

async fn context_tokens_are_accepted_on_the_notes_routes(app: TestApp) {
    let a = app.install("a").await;
    let context = a.context_token("PROJ-1");
    let response = app
        .call(
            "POST",
            NOTES,
            Some(&context),
            Some(&json!({ "body": "hi" })),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.json()["author"], "557058:account-id");
}

on_both_stores!(
    app = sample(),
    a_valid_form_field_token_is_accepted,
    context_tokens_are_accepted_on_the_notes_routes,
);
