//! The sample's metrics and their listeners, through the server binary.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::helpers::*;

mod metrics {
    use super::*;

    #[tokio::test]
    async fn metrics_count_requests_auth_failures_cache_and_lifecycle() {
        let app = TestApp::sqlite().await;
        let tenant = app.install("metrics").await;
        app.signed(&tenant, "GET", "/api/issues/PROJ-1/notes", None)
            .await;
        app.signed(&tenant, "GET", "/api/issues/PROJ-1/notes", None)
            .await;
        app.call("GET", "/api/issues/PROJ-1/notes", Some("garbage"), None)
            .await;
        let response = app.call("GET", "/metrics", None, None).await;
        assert_eq!(response.status, StatusCode::OK);
        let text = String::from_utf8(response.body).unwrap();
        for expected in [
            r#"http_requests_total{route="/api/issues/{issue_key}/notes",method="GET",status="200"}"#,
            r#"http_requests_total{route="/installed",method="POST",status="204"}"#,
            "http_request_duration_seconds_bucket{",
            r#"auth_failures_total{reason="malformed_token"}"#,
            r#"tenant_cache_total{result="hit"}"#,
            r#"tenant_cache_total{result="miss"}"#,
            r#"lifecycle_events_total{event="installed"}"#,
            r#"db_pool_connections{state="max"} 5"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
        assert!(!text.contains(&tenant.secret));
    }

    #[tokio::test]
    async fn metrics_can_require_a_bearer_token() {
        let app =
            TestApp::sqlite_with(|name| (name == "METRICS_TOKEN").then(|| "s3cret".to_owned()))
                .await;
        app.call("GET", "/metrics", None, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "bad_metrics_token");
        let wrong = Request::get("/metrics")
            .header("authorization", "Bearer nope")
            .body(Body::empty())
            .unwrap();
        app.send(wrong)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "bad_metrics_token");
        let right = Request::get("/metrics")
            .header("authorization", "Bearer s3cret")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(right).await.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn on_postgres_metrics_are_public_only_behind_a_token_and_the_log_says_how() {
        let app = TestApp::postgres().await;
        let server =
            ServerProcess::start(&[("DATABASE_URL", &app.database_url), ("BASE_URL", BASE_URL)])
                .await;
        let metrics = reqwest::get(format!("{}/metrics", server.url))
            .await
            .unwrap();
        assert_eq!(metrics.status(), 404);
        let (_, logs) = server.stop().await;
        assert!(
            logs.contains("GET /metrics is not served: set METRICS_PORT"),
            "{logs}"
        );

        let server = ServerProcess::start(&[
            ("DATABASE_URL", &app.database_url),
            ("BASE_URL", BASE_URL),
            ("METRICS_TOKEN", "s3cret"),
        ])
        .await;
        let client = reqwest::Client::new();
        let url = format!("{}/metrics", server.url);
        let refused = client.get(&url).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let scraped = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(scraped.status(), 200);
    }

    #[tokio::test]
    async fn with_metrics_port_metrics_are_served_on_that_port_only() {
        let app = TestApp::postgres().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let server = ServerProcess::start(&[
            ("DATABASE_URL", &app.database_url),
            ("BASE_URL", BASE_URL),
            ("METRICS_PORT", &port),
        ])
        .await;
        let public = reqwest::get(format!("{}/metrics", server.url))
            .await
            .unwrap();
        assert_eq!(public.status(), 404);
        let internal = format!("http://127.0.0.1:{port}");
        let metrics = reqwest::get(format!("{internal}/metrics")).await.unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains(r#"route="/readyz""#), "{text}");
        let other = reqwest::get(format!("{internal}/healthz")).await.unwrap();
        assert_eq!(other.status(), 404);
        let (status, logs) = server.stop().await;
        assert!(status.success(), "{status}: {logs}");
        assert!(
            reqwest::get(format!("{internal}/metrics")).await.is_err(),
            "the metrics listener is closed"
        );
    }
}
