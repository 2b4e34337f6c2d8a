//! The container door: requests Forge's sidecar forwards to the app running as a Forge Container,
//! each resolved through the sidecar to its installation and user.

use axum::http::StatusCode;
use connect_axum::protocol::egress::ProxyActor;
use connect_axum_testing::{FakeSidecar, Fit, Reply, TestApp};
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

async fn product_calls_go_through_the_proxy_as_the_user_and_as_the_app(
    app: TestApp,
    sidecar: FakeSidecar,
) {
    sidecar.on_product("GET", "/jira/rest/api/3/myself", |call| {
        let who = match &call.actor {
            Some(ProxyActor::User { .. }) => "user",
            Some(ProxyActor::App) => "app",
            None => "no one",
        };
        Reply::json(StatusCode::OK, &json!({ "who": who }))
    });
    let site = sidecar.site("acme");
    let id = sidecar.invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    for who in ["user", "app"] {
        let path = format!("/forge/invocation/myself/{who}");
        let response = sidecar.invoke(&app, &id, "GET", &path, None).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        assert_eq!(response.json(), json!({ "who": who }));
    }
    let calls = sidecar.product_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].authorization, format!("Forge id={id},as=user"));
    assert_eq!(calls[1].authorization, format!("Forge id={id},as=app"));
    for call in &calls {
        assert_eq!(
            call.installation_id.as_deref(),
            Some(&*site.installation_id)
        );
    }
    assert_eq!(
        sidecar.authorizations(),
        [
            format!("Forge id={id}"),
            format!("Forge id={id},as=user"),
            format!("Forge id={id},as=app"),
        ]
    );
}

async fn an_invocation_of_the_app_itself_cannot_call_as_a_user(app: TestApp, sidecar: FakeSidecar) {
    let site = sidecar.site("acme");
    let id = sidecar.invocation(FakeSidecar::app_context(&site));
    let response = sidecar
        .invoke(&app, &id, "GET", "/forge/invocation/myself/user", None)
        .await;
    // As on a remote whose invocation carries no user token: a clear error, no call.
    response.assert_error(StatusCode::BAD_GATEWAY, "product_error");
    assert!(sidecar.product_calls().is_empty(), "nothing was sent");
}

async fn forge_storage_goes_through_the_proxy_per_installation(app: TestApp, sidecar: FakeSidecar) {
    let (a, b) = (sidecar.site("acme"), sidecar.site("globex"));
    let ia = sidecar.invocation(FakeSidecar::user_context(&a, "557058:alice", "PROJ-1"));
    let ib = sidecar.invocation(FakeSidecar::user_context(&b, "557058:bob", "PROJ-1"));
    let put = sidecar
        .invoke(
            &app,
            &ia,
            "PUT",
            "/forge/invocation/storage/colour",
            Some(&json!("red")),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{:?}", put.body);
    assert_eq!(
        sidecar.storage().stored(&a.installation_id, "colour"),
        Some(json!("red"))
    );
    assert_eq!(sidecar.storage().stored(&b.installation_id, "colour"), None);
    let read = |id: String| {
        let (app, sidecar) = (&app, &sidecar);
        async move {
            sidecar
                .invoke(app, &id, "GET", "/forge/invocation/storage/colour", None)
                .await
                .json()
        }
    };
    assert_eq!(read(ia.clone()).await, json!({ "value": "red" }));
    assert_eq!(read(ib.clone()).await, json!({ "value": null }));
    // Each storage call carried its invocation's header, which the proxy resolved.
    let installations: Vec<_> = sidecar
        .storage()
        .storage_requests()
        .into_iter()
        .map(|call| call.installation_id)
        .collect();
    assert_eq!(
        installations,
        [
            Some(a.installation_id.clone()),
            Some(a.installation_id.clone()),
            Some(b.installation_id.clone()),
        ]
    );
    let headers = sidecar.authorizations();
    assert_eq!(
        headers
            .iter()
            .filter(|h| **h == format!("Forge id={ia}"))
            .count(),
        3
    );
    assert_eq!(
        headers
            .iter()
            .filter(|h| **h == format!("Forge id={ib}"))
            .count(),
        2
    );
}

async fn a_call_to_a_host_the_app_did_not_declare_is_refused_unsent(
    app: TestApp,
    sidecar: FakeSidecar,
) {
    let site = sidecar.site("acme");
    let id = sidecar.invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    sidecar
        .invoke(&app, &id, "GET", "/forge/elsewhere", None)
        .await
        .assert_error(StatusCode::BAD_GATEWAY, "egress_refused");
    assert!(sidecar.product_calls().is_empty());
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
    product_calls_go_through_the_proxy_as_the_user_and_as_the_app,
    an_invocation_of_the_app_itself_cannot_call_as_a_user,
    forge_storage_goes_through_the_proxy_per_installation,
    a_call_to_a_host_the_app_did_not_declare_is_refused_unsent,
);

/// A container's store by default: SQLite in memory, no key file, one database across the pool's
/// connections (many requests at once, each installation's tenant kept).
#[tokio::test]
async fn the_in_memory_store_serves_concurrent_invocations_of_many_installations() {
    let sidecar = FakeSidecar::start().await;
    let vars = sidecar.vars();
    let app = probe()
        .in_memory_with(move |name| match name {
            "SECRETS_KEY" => Some(String::new()),
            name => vars(name),
        })
        .await;
    let sites: Vec<_> = (0..8).map(|i| sidecar.site(&format!("site-{i}"))).collect();
    let mut calls = Vec::new();
    for site in &sites {
        for n in 0..4 {
            let id = sidecar.invocation(FakeSidecar::user_context(site, "557058:alice", "PROJ-1"));
            let (app, sidecar) = (&app, &sidecar);
            calls.push(async move {
                let body = json!({ "n": n });
                let r = sidecar
                    .invoke(app, &id, "POST", "/forge/echo", Some(&body))
                    .await;
                (site.installation_id.clone(), r)
            });
        }
    }
    for (installation, response) in futures_util::future::join_all(calls).await {
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        assert_eq!(response.json()["clientKey"], installation);
    }
    // Nothing was written where the test runs: no database file, no key file.
    let written: Vec<_> = std::fs::read_dir(".")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("file:") || name.starts_with("connect-axum."))
        .collect();
    assert!(written.is_empty(), "{written:?}");
}
