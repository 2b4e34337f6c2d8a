//! The container door: requests Forge's sidecar forwards to the app running as a Forge Container,
//! each resolved through the sidecar to its installation and user.

use axum::http::StatusCode;
use connect_axum_testing::{FakeSidecar, Fit, TestApp};
use serde_json::json;

use crate::probe::probe;

async fn sidecar() -> (impl Fn(&str) -> Option<String>, FakeSidecar) {
    let sidecar = FakeSidecar::start().await;
    (sidecar.vars(), sidecar)
}

async fn a_user_invocation_reaches_the_forge_routes_as_its_installation_and_user(
    app: TestApp,
    sidecar: FakeSidecar,
) {
    let site = sidecar.site("acme");
    let id = sidecar.invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    let response = sidecar.invoke(&app, &id, "GET", "/forge/probe", None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.json(),
        json!({ "clientKey": site.installation_id, "accountId": "557058:alice" })
    );
    assert_eq!(sidecar.authorizations(), [format!("Forge id={id}")]);

    let written = sidecar
        .invoke(&app, &id, "POST", "/forge/echo", Some(&json!({ "n": 1 })))
        .await;
    assert_eq!(written.status, StatusCode::OK);
    assert_eq!(written.json()["clientKey"], site.installation_id);
    // One fetch an invocation: the second request found its context kept.
    assert_eq!(sidecar.context_fetches(), 1);
}

async fn an_invocation_of_the_app_itself_has_no_user(app: TestApp, sidecar: FakeSidecar) {
    let site = sidecar.site("acme");
    let id = sidecar.invocation(FakeSidecar::app_context(&site));
    let response = sidecar.invoke(&app, &id, "GET", "/forge/probe", None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.json(),
        json!({ "clientKey": site.installation_id, "accountId": null })
    );
}

async fn two_installations_are_two_tenants(app: TestApp, sidecar: FakeSidecar) {
    let (a, b) = (sidecar.site("acme"), sidecar.site("globex"));
    for site in [&a, &b] {
        let id = sidecar.invocation(FakeSidecar::user_context(site, "557058:bob", "PROJ-1"));
        let response = sidecar.invoke(&app, &id, "GET", "/forge/probe", None).await;
        assert_eq!(response.json()["clientKey"], site.installation_id);
    }
    assert_ne!(a.installation_id, b.installation_id);
}

async fn a_request_without_an_invocation_id_is_refused(app: TestApp, sidecar: FakeSidecar) {
    app.call("GET", "/forge/probe", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_invocation_id");
    // A Forge Remote token is not what the container door takes.
    let forge_site = sidecar.site("acme");
    let fit = Fit::for_installation(
        connect_axum_testing::sidecar::CONTAINER_APP_ID,
        &forge_site.installation_id,
        &forge_site.cloud_id,
    )
    .sign();
    let request = axum::http::Request::get("/forge/probe")
        .header("authorization", format!("Bearer {fit}"))
        .body(axum::body::Body::empty())
        .unwrap();
    app.send(request)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_invocation_id");
    assert_eq!(sidecar.context_fetches(), 0);
}

async fn an_invocation_id_that_could_forge_an_egress_header_is_refused_unsent(
    app: TestApp,
    sidecar: FakeSidecar,
) {
    for id in ["a,as=app", "a=b", "", &"a".repeat(300), "a b"] {
        sidecar
            .invoke(&app, id, "GET", "/forge/probe", None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_invocation_id");
    }
    assert_eq!(sidecar.context_fetches(), 0);
}

async fn an_invocation_the_sidecar_does_not_know_is_refused(app: TestApp, sidecar: FakeSidecar) {
    sidecar
        .invoke(&app, "0f3c77ab-made-up", "GET", "/forge/probe", None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "invocation_refused");
    // Not kept: the same id is asked for again.
    sidecar
        .invoke(&app, "0f3c77ab-made-up", "GET", "/forge/probe", None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "invocation_refused");
    assert_eq!(sidecar.context_fetches(), 2);
}

async fn a_sidecar_that_does_not_answer_is_a_503_and_then_recovers(
    app: TestApp,
    sidecar: FakeSidecar,
) {
    let site = sidecar.site("acme");
    let id = sidecar.invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    sidecar.set_down(true);
    sidecar
        .invoke(&app, &id, "GET", "/forge/probe", None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "sidecar_unavailable");
    sidecar.set_down(false);
    let response = sidecar.invoke(&app, &id, "GET", "/forge/probe", None).await;
    assert_eq!(response.status, StatusCode::OK);
}

crate::probe::on_both_stores!(
    app = probe(),
    with = sidecar,
    a_user_invocation_reaches_the_forge_routes_as_its_installation_and_user,
    an_invocation_of_the_app_itself_has_no_user,
    two_installations_are_two_tenants,
    a_request_without_an_invocation_id_is_refused,
    an_invocation_id_that_could_forge_an_egress_header_is_refused_unsent,
    an_invocation_the_sidecar_does_not_know_is_refused,
    a_sidecar_that_does_not_answer_is_a_503_and_then_recovers,
);
