//! The site URLs an install may name, as the sample's panel page names them in its CSP. How keys
//! are fetched, how long a token may live and which site URLs an install may name are the
//! library's: crates/connect-axum/tests/api/keys.rs.

use axum::http::StatusCode;
use connect_axum_testing::on_both_stores;
use serde_json::json;

use crate::helpers::*;

fn custom_domain_allowed(name: &str) -> Option<String> {
    (name == "ALLOWED_BASE_URLS").then(|| "*.atlassian.net,docs.acme.com".to_owned())
}

async fn a_custom_display_url_on_an_allowed_host_is_named_in_the_pages_csp(app: TestApp) {
    let tenant = TestTenant::new("acme");
    let mut payload = tenant.payload("installed");
    payload["displayUrl"] = "https://docs.acme.com".into();
    let token = install_token(&tenant, "/installed", json!({}));
    let installed = app
        .call("POST", "/installed", Some(&token), Some(&payload))
        .await;
    assert_eq!(installed.status, StatusCode::NO_CONTENT);
    let target = "/issue-notes?issueKey=PROJ-1";
    let page = app
        .call(
            "GET",
            &format!("{target}&jwt={}", tenant.token("GET", target)),
            None,
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    let sites = "https://acme.atlassian.net https://docs.acme.com";
    assert!(csp.ends_with(&format!("frame-ancestors {sites}")), "{csp}");
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    assert!(csp.contains(&format!("' {sites}; style-src")), "{csp}");
}

on_both_stores!(
    app = sample(),
    #[multi_thread(vars = custom_domain_allowed)]
    a_custom_display_url_on_an_allowed_host_is_named_in_the_pages_csp,
);
