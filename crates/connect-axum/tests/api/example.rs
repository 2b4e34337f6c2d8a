//! The webhook-counter example: a feature built on the library from outside the crate.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use crate::probe::*;

// The example's public items are its crate root's; as a module here they reach no further.
#[path = "../../examples/webhook_counter.rs"]
#[allow(dead_code, unreachable_pub)]
mod webhook_counter;

async fn the_example_counts_each_tenants_webhooks_apart(app: TestApp) {
    let a = app.install("a").await;
    let b = app.install("b").await;
    let router = webhook_counter::router(app.state.clone(), webhook_counter::Counts::default());
    let send = |tenant: &TestTenant, method: &str, target: &str| {
        let request = Request::builder()
            .method(method)
            .uri(target)
            .header(
                header::AUTHORIZATION,
                format!("JWT {}", tenant.token(method, target)),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        router.clone().oneshot(request)
    };
    let hook = "/webhooks/count?event=jira:issue_updated";
    for tenant in [&a, &a, &b] {
        assert_eq!(
            send(tenant, "POST", hook).await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
    }
    let counts = |tenant: &TestTenant| {
        let response = send(tenant, "GET", "/api/webhook-counts");
        async move {
            let response = response.await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    assert_eq!(counts(&a).await, json!({ "jira:issue_updated": 2 }));
    assert_eq!(counts(&b).await, json!({ "jira:issue_updated": 1 }));
    let unsigned = Request::post(hook).body(Body::empty()).unwrap();
    assert_eq!(
        router.clone().oneshot(unsigned).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let descriptor = router.clone().oneshot(
        Request::get("/atlassian-connect.json")
            .body(Body::empty())
            .unwrap(),
    );
    assert_eq!(
        descriptor.await.unwrap().status(),
        StatusCode::OK,
        "the library's own routes are still there"
    );
    let enabled = send(&a, "POST", "/enabled").await.unwrap();
    assert_ne!(
        enabled.status(),
        StatusCode::NOT_FOUND,
        "the lifecycle hooks are still there"
    );
    let notes = send(&a, "GET", "/api/issues/PROJ-1/notes").await.unwrap();
    assert_eq!(
        notes.status(),
        StatusCode::NOT_FOUND,
        "the sample's routes are not the library's"
    );

    // The feature's routes are under the library's whole middleware stack.
    let listed = send(&a, "GET", "/api/webhook-counts").await.unwrap();
    assert!(
        listed.headers().contains_key("x-request-id"),
        "no request id on the app's route"
    );
    let oversized = Request::get("/api/webhook-counts")
        .header(
            header::AUTHORIZATION,
            format!("JWT {}", a.token("GET", "/api/webhook-counts")),
        )
        .header("x-padding", "p".repeat(40 * 1024))
        .body(Body::empty())
        .unwrap();
    let refused = router.clone().oneshot(oversized).await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

on_both_stores!(
    app = probe(),
    the_example_counts_each_tenants_webhooks_apart
);
