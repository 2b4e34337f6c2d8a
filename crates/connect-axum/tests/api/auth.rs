//! JWT + QSH verification on tenant routes: every way a token can be wrong, the session token,
//! and the limits on verified requests, on the probe's routes.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::probe::*;

/// The probe's context-JWT route, which answers who the request was verified as.
const PROBE: &str = "/api/probe";
/// The probe's JSON write behind a context JWT.
const ECHO: &str = "/api/probe/echo";
/// The probe's form write behind a context JWT.
const FORM: &str = "/api/probe/form";

/// Asserts `token` on `GET PROBE` (header) is refused with `code`.
async fn refused(app: &TestApp, token: &str, code: &str) {
    app.call("GET", PROBE, Some(token), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, code);
}

async fn a_valid_header_token_is_accepted(app: TestApp) {
    let a = app.install("a").await;
    let response = app.signed(&a, "GET", PROBE, None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json()["clientKey"], a.client_key);
}

async fn a_valid_query_token_is_accepted(app: TestApp) {
    let a = app.install("a").await;
    let target = format!("{PROBE}?lic=none&cp=%2Fjira&xdm_e=https%3A%2F%2Fa.atlassian.net");
    let token = a.token("GET", &target);
    let response = app
        .call("GET", &format!("{target}&jwt={token}"), None, None)
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let token = a.token("GET", PROBE);
    assert_eq!(
        app.call("GET", &format!("{PROBE}?jwt={token}"), None, None)
            .await
            .status,
        StatusCode::OK
    );
}

async fn a_form_body_with_a_header_token_is_read_once_the_token_verified(app: TestApp) {
    let a = app.install("a").await;
    let form = |token: &str, body: &str| {
        Request::post(FORM)
            .header(header::AUTHORIZATION, format!("JWT {token}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let created = app
        .send(form(&a.token("POST", FORM), "body=with+a+header+token"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["body"], "with a header token");
    let second = a.token("POST", FORM);
    app.send(form(
        &a.token("POST", FORM),
        &format!("body=x&jwt={second}"),
    ))
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "multiple_tokens");
    app.send(form(&a.token("POST", FORM), "body=x&jwt=garbage"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "multiple_tokens");
    app.send(form("garbage", &format!("body=x&jwt={second}")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "malformed_token");
}

async fn a_tampered_signature_is_refused(app: TestApp) {
    let a = app.install("a").await;
    let token = a.token("GET", PROBE);
    let (rest, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    refused(
        &app,
        &format!("{rest}.{flipped}{}", &signature[1..]),
        "bad_signature",
    )
    .await;
    let (header, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let other_claims = a.token_with(json!({ "qsh": qsh_of("GET", PROBE), "sub": "someone-else" }));
    let other_claims = other_claims.split('.').nth(1).unwrap();
    refused(
        &app,
        &format!("{header}.{other_claims}.{signature}"),
        "bad_signature",
    )
    .await;
}

async fn an_expired_token_is_refused_beyond_the_leeway(app: TestApp) {
    let a = app.install("a").await;
    let qsh = qsh_of("GET", PROBE);
    refused(
        &app,
        &a.token_with(json!({ "qsh": qsh, "iat": now() - 600, "exp": now() - 60 })),
        "expired",
    )
    .await;
    let within = a.token_with(json!({ "qsh": qsh, "iat": now() - 600, "exp": now() - 10 }));
    assert_eq!(
        app.call("GET", PROBE, Some(&within), None).await.status,
        StatusCode::OK
    );
}

async fn a_token_issued_in_the_future_is_refused(app: TestApp) {
    let a = app.install("a").await;
    let qsh = qsh_of("GET", PROBE);
    refused(
        &app,
        &a.token_with(json!({ "qsh": qsh, "iat": now() + 600, "exp": now() + 900 })),
        "issued_in_future",
    )
    .await;
    refused(
        &app,
        &a.token_with(json!({ "qsh": qsh, "nbf": now() + 600 })),
        "not_yet_valid",
    )
    .await;
}

async fn a_token_without_exp_is_refused(app: TestApp) {
    let a = app.install("a").await;
    refused(
        &app,
        &a.token_with(json!({ "qsh": qsh_of("GET", PROBE), "exp": null })),
        "missing_claim",
    )
    .await;
}

async fn a_token_with_an_unstorable_subject_is_refused(app: TestApp) {
    let a = app.install("a").await;
    let token = a.token_with(json!({ "qsh": qsh_of("POST", ECHO), "sub": "a\u{0}b" }));
    app.call("POST", ECHO, Some(&token), Some(&json!({ "body": "x" })))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "malformed_token");
}

async fn a_token_without_qsh_is_refused(app: TestApp) {
    let a = app.install("a").await;
    refused(&app, &a.token_with(json!({})), "missing_qsh").await;
}

async fn a_token_for_another_path_method_or_query_is_refused(app: TestApp) {
    let a = app.install("a").await;
    refused(&app, &a.token("GET", "/api/probe/other"), "qsh_mismatch").await;
    refused(&app, &a.token("POST", PROBE), "qsh_mismatch").await;
    refused(
        &app,
        &a.token("GET", &format!("{PROBE}?x=1")),
        "qsh_mismatch",
    )
    .await;
    let token = a.token("GET", PROBE);
    app.call("GET", &format!("{PROBE}?added=after"), Some(&token), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
    let token = a.token("GET", &format!("{PROBE}?a=1"));
    app.call("GET", &format!("{PROBE}?a=1&jwt={token}&b=2"), None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
}

async fn a_token_from_an_unknown_issuer_is_refused(app: TestApp) {
    let stranger = app.tenant("stranger");
    refused(&app, &stranger.token("GET", PROBE), "unknown_tenant").await;
    let a = app.install("a").await;
    refused(
        &app,
        &a.token_with(json!({ "qsh": qsh_of("GET", PROBE), "iss": null })),
        "missing_claim",
    )
    .await;
    for iss in ["a\u{0}b".to_owned(), String::new(), "k".repeat(300)] {
        refused(
            &app,
            &a.token_with(json!({ "qsh": qsh_of("GET", PROBE), "iss": iss })),
            "unknown_tenant",
        )
        .await;
    }
}

async fn tokens_with_other_algorithms_are_refused(app: TestApp) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let a = app.install("a").await;
    let claims = json!({ "iss": a.client_key, "exp": now() + 60, "qsh": qsh_of("GET", PROBE) });
    let none = format!(
        "{}.{}.",
        b64.encode(json!({ "alg": "none", "typ": "JWT" }).to_string()),
        b64.encode(claims.to_string())
    );
    refused(&app, &none, "unsupported_algorithm").await;
    for alg in [
        jsonwebtoken::Algorithm::HS512,
        jsonwebtoken::Algorithm::HS384,
    ] {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(a.secret.as_bytes()),
        )
        .unwrap();
        refused(&app, &token, "unsupported_algorithm").await;
    }
    refused(&app, &rs256(&claims, KID), "unsupported_algorithm").await;
}

async fn a_token_signed_with_another_tenants_secret_is_refused(app: TestApp) {
    let a = app.install("a").await;
    let b = app.install("b").await;
    let claims = json!({ "iss": a.client_key, "iat": now(), "exp": now() + 60, "qsh": qsh_of("GET", PROBE) });
    refused(&app, &hs256(&claims, &b.secret), "bad_signature").await;
}

async fn other_schemes_garbage_and_huge_tokens_are_refused(app: TestApp) {
    let a = app.install("a").await;
    let token = a.token("GET", PROBE);
    let request = Request::get(PROBE)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    app.send(request)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unsupported_scheme");
    refused(&app, "garbage", "malformed_token").await;
    refused(&app, "", "malformed_token").await;
    refused(&app, "a.b.c", "malformed_token").await;
    refused(&app, &"x".repeat(20 * 1024), "malformed_token").await;
    app.call("GET", PROBE, Some(&"x".repeat(100 * 1024)), None)
        .await
        .assert_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
        );
    let huge = format!(
        "{}.{}.{}",
        "e".repeat(25_000),
        "e".repeat(25_000),
        "e".repeat(10_000)
    );
    app.call("GET", &format!("{PROBE}?jwt={huge}"), None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "malformed_token");
}

async fn no_token_or_several_tokens_are_refused(app: TestApp) {
    let a = app.install("a").await;
    app.call("GET", PROBE, None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    let token = a.token("GET", PROBE);
    app.call("GET", &format!("{PROBE}?jwt={token}"), Some(&token), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "multiple_tokens");
    app.call(
        "GET",
        &format!("{PROBE}?jwt={token}&jwt={token}"),
        None,
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "multiple_tokens");
}

async fn disabled_and_uninstalled_tenants_are_refused(app: TestApp) {
    let a = app.install("a").await;
    assert_eq!(
        app.hook(&a, "disabled").await.status,
        StatusCode::NO_CONTENT
    );
    refused(&app, &a.token("GET", PROBE), "tenant_disabled").await;
    assert_eq!(app.hook(&a, "enabled").await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.signed(&a, "GET", PROBE, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.hook(&a, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    refused(&app, &a.token("GET", PROBE), "tenant_uninstalled").await;
}

async fn a_session_token_is_issued_and_accepted_only_where_context_tokens_are(app: TestApp) {
    let a = app.install("a").await;
    assert!(
        !app.signed(&a, "GET", PROBE, None)
            .await
            .headers
            .contains_key("x-acpt"),
        "not for a product JWT"
    );
    let response = app
        .call("GET", PROBE, Some(&a.context_token("PROJ-1")), None)
        .await;
    let session = response.headers["x-acpt"].to_str().unwrap().to_owned();
    let created = app
        .call(
            "POST",
            ECHO,
            Some(&session),
            Some(&json!({ "body": "via session" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(
        created.json()["accountId"],
        "557058:account-id",
        "the session keeps sub"
    );
    assert!(
        created.headers.contains_key("x-acpt"),
        "a session token is refreshed"
    );
    app.call(
        "POST",
        "/disabled",
        Some(&session),
        Some(&a.payload("disabled")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "context_token_not_allowed");
    assert!(
        !app.hook(&a, "disabled")
            .await
            .headers
            .contains_key("x-acpt")
    );
}

async fn a_session_token_cannot_be_moved_to_another_tenant(app: TestApp) {
    let a = app.install("a").await;
    let b = app.install("b").await;
    let forged = hs256(
        &json!({ "iss": APP_KEY, "aud": b.client_key, "exp": now() + 60, "qsh": "context-qsh" }),
        &a.secret,
    );
    refused(&app, &forged, "bad_signature").await;
    let bound = hs256(
        &json!({ "iss": APP_KEY, "aud": a.client_key, "exp": now() + 60, "qsh": qsh_of("GET", PROBE) }),
        &a.secret,
    );
    refused(&app, &bound, "qsh_mismatch").await;
    let no_aud = hs256(
        &json!({ "iss": APP_KEY, "exp": now() + 60, "qsh": "context-qsh" }),
        &a.secret,
    );
    refused(&app, &no_aud, "missing_claim").await;
}

async fn failed_requests_get_no_session_token(app: TestApp) {
    let a = app.install("a").await;
    let request = Request::post(ECHO)
        .header(
            header::AUTHORIZATION,
            format!("JWT {}", a.context_token("PROJ-1")),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("not json"))
        .unwrap();
    let response = app.send(request).await;
    response.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(!response.headers.contains_key("x-acpt"));
}

on_both_stores!(
    app = probe(),
    a_valid_header_token_is_accepted,
    a_valid_query_token_is_accepted,
    a_form_body_with_a_header_token_is_read_once_the_token_verified,
    a_tampered_signature_is_refused,
    an_expired_token_is_refused_beyond_the_leeway,
    a_token_issued_in_the_future_is_refused,
    a_token_without_exp_is_refused,
    a_token_with_an_unstorable_subject_is_refused,
    a_token_without_qsh_is_refused,
    a_token_for_another_path_method_or_query_is_refused,
    a_token_from_an_unknown_issuer_is_refused,
    tokens_with_other_algorithms_are_refused,
    a_token_signed_with_another_tenants_secret_is_refused,
    other_schemes_garbage_and_huge_tokens_are_refused,
    no_token_or_several_tokens_are_refused,
    disabled_and_uninstalled_tenants_are_refused,
    a_session_token_is_issued_and_accepted_only_where_context_tokens_are,
    a_session_token_cannot_be_moved_to_another_tenant,
    failed_requests_get_no_session_token,
);

/// Over a real socket, hyper's own limits answer oversized tokens: a 4xx and no hang.
#[tokio::test]
async fn a_100_kb_token_over_http_is_a_client_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = probe().sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let token = "x".repeat(100 * 1024);
    for request in [
        format!(
            "GET {PROBE} HTTP/1.1\r\nHost: app\r\nAuthorization: JWT {token}\r\nConnection: close\r\n\r\n"
        ),
        format!("GET {PROBE}?jwt={token} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request.as_bytes()).await;
        let mut head = [0u8; 12];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_exact(&mut head),
        )
        .await
        .expect("an answer, not a hang")
        .unwrap();
        let status = String::from_utf8_lossy(&head[9..12]).to_string();
        assert!(status.starts_with('4'), "status {status}");
    }
}

mod limits {
    use super::*;

    #[tokio::test]
    async fn a_tenant_over_its_rate_is_answered_429_with_retry_after_and_others_are_not() {
        let app = probe()
            .sqlite_with(|name| (name == "TENANT_RATE_LIMIT").then(|| "1".to_owned()))
            .await;
        let a = app.install("a").await;
        let b = app.install("b").await;
        let statuses: Vec<StatusCode> = {
            let mut v = Vec::new();
            for _ in 0..6 {
                v.push(app.signed(&a, "GET", PROBE, None).await.status);
            }
            v
        };
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            2,
            "a burst of twice the rate"
        );
        let limited = app.signed(&a, "GET", PROBE, None).await;
        limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let retry: u64 = limited.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert_eq!(
            app.signed(&b, "GET", PROBE, None).await.status,
            StatusCode::OK
        );
    }

    /// A body that sends its first byte and then nothing, as a stalled client does; `read`
    /// is notified once the server waits for more.
    fn stalled_body(read: std::sync::Arc<tokio::sync::Notify>) -> Body {
        use futures_util::StreamExt;
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(
            axum::body::Bytes::from_static(b"{"),
        )]);
        let stall = futures_util::stream::once(async move {
            read.notify_one();
            std::future::pending().await
        });
        Body::from_stream(first.chain(stall))
    }

    /// Polls `GET PROBE` as `tenant` until it answers 200, for at most 10 s.
    async fn until_the_probe_answers(app: &TestApp, tenant: &TestTenant) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let response = app.signed(tenant, "GET", PROBE, None).await;
            if response.status == StatusCode::OK {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {}",
                response.status
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn verified_requests_over_the_concurrency_limit_are_shed_with_503_while_health_answers() {
        use tower::ServiceExt;

        let app = probe()
            .sqlite_with(|name| (name == "MAX_CONCURRENT_REQUESTS").then(|| "1".to_owned()))
            .await;
        let a = app.install("a").await;
        // A signed install holds the one tenant slot once its signature verified, while its body
        // never ends.
        let b = app.tenant("b");
        let read = std::sync::Arc::new(tokio::sync::Notify::new());
        let slow = Request::post("/installed")
            .header(
                header::AUTHORIZATION,
                format!("JWT {}", b.install_token("/installed", json!({}))),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(stalled_body(read.clone()))
            .unwrap();
        let slow = tokio::spawn(app.router.clone().oneshot(slow));
        tokio::time::timeout(std::time::Duration::from_secs(10), read.notified())
            .await
            .expect("the install's body is read");
        app.signed(&a, "GET", PROBE, None)
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
        assert_eq!(
            app.call("GET", "/healthz", None, None).await.status,
            StatusCode::OK
        );
        slow.abort();
        until_the_probe_answers(&app, &a).await;
    }
}
