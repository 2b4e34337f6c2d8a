//! The queue of Forge events: an app's handler that fails runs again after its backoff, and is
//! given up after the last attempt, on both stores.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::StatusCode;
use connect_axum::app::AppState;
use connect_axum::state::{ForgeEvent, ForgeEventHandler, HandlerError};
use connect_axum_testing::{AppUnderTest, FakeForge};
use serde_json::json;

use crate::probe::TestApp;

const APP_ARI: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-00000000000f";

/// Fails every event whose issue key is `FAIL-1`, and records each run.
#[derive(Clone, Default)]
struct Flaky {
    runs: Arc<Mutex<Vec<(String, u32)>>>,
}

#[async_trait]
impl ForgeEventHandler for Flaky {
    fn handles(&self, event_type: &str) -> bool {
        event_type == "avi:jira:created:issue"
    }

    async fn handle(&self, _app: &AppState, event: &ForgeEvent) -> Result<(), HandlerError> {
        let key = event.payload["issue"]["key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.runs.lock().unwrap().push((key.clone(), event.attempt));
        if key == "FAIL-1" {
            return Err(format!("boom {}", event.attempt).into());
        }
        Ok(())
    }
}

async fn start(postgres: bool) -> (TestApp, FakeForge, Flaky) {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let flaky = Flaky::default();
    let handler = flaky.clone();
    let under_test =
        AppUnderTest::new(move |config| crate::probe::app(config).forge_events(handler.clone()));
    let settings = vec![("FORGE_EVENT_MAX_ATTEMPTS", "3".to_owned())];
    let app = crate::probe::start_trusting(under_test, postgres, &forge, settings).await;
    (app, forge, flaky)
}

async fn a_failing_handler_runs_again_after_its_backoff_and_is_given_up_after_the_last_attempt(
    postgres: bool,
) {
    let (app, forge, flaky) = start(postgres).await;
    let site = forge.site("acme");
    let installed = json!({ "eventType": "avi:forge:installed:app" });
    let response = app
        .deliver(
            "/forge/events",
            &forge.trigger(&site).sign(),
            None,
            &installed,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    for key in ["FAIL-1", "OK-1"] {
        let event = json!({ "eventType": "avi:jira:created:issue", "issue": { "key": key } });
        let response = app
            .deliver("/forge/events", &forge.trigger(&site).sign(), None, &event)
            .await;
        assert_eq!(response.status, StatusCode::OK);
    }
    assert_eq!(app.run_forge_events().await, 2);
    // The failed one waits for its backoff; the other is done.
    assert_eq!(app.run_forge_events().await, 0);
    let due =
        "update forge_event set run_after = '2020-01-01T00:00:00+00:00' where done_at is null";
    for _ in 0..2 {
        app.raw(due).await;
        assert_eq!(app.run_forge_events().await, 1);
    }
    app.raw(due).await;
    assert_eq!(app.run_forge_events().await, 0, "given up after 3 attempts");
    let mut runs = flaky.runs.lock().unwrap().clone();
    runs.sort();
    assert_eq!(
        runs,
        [
            ("FAIL-1".to_owned(), 1),
            ("FAIL-1".to_owned(), 2),
            ("FAIL-1".to_owned(), 3),
            ("OK-1".to_owned(), 1)
        ]
    );
    let failed = app
        .raw("select last_error from forge_event where done_at is not null and last_error is not null")
        .await;
    assert_eq!(failed, [Some("boom 3".to_owned())]);
    let rendered = connect_axum::monitoring::handle().unwrap().render();
    for outcome in ["done", "retry", "gave_up"] {
        assert!(
            rendered.contains(&format!(
                "forge_events_processed_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} counted"
        );
    }
    // The installed event no handler wants is not queued; nothing is left pending.
    assert_eq!(app.store().events().pending().await.unwrap(), 0);
    assert_eq!(app.raw("select id from forge_event").await.len(), 2);
    // Forgotten once done long enough ago.
    let pruned = app
        .store()
        .events()
        .prune(connect_axum::store::now())
        .await
        .unwrap();
    assert_eq!(pruned, 2);
}

async fn a_delivery_that_is_not_json_or_too_large_is_a_client_error(postgres: bool) {
    let (app, forge, _) = start(postgres).await;
    let site = forge.site("acme");
    let send = |body: Vec<u8>| {
        let mut request = connect_axum_testing::forge::invocation(
            "POST",
            "/forge/events",
            &forge.trigger(&site).sign(),
            &[],
            None,
        );
        *request.body_mut() = axum::body::Body::from(body);
        app.send(request)
    };
    send(b"{not json".to_vec())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    let huge = format!(
        r#"{{"eventType": "avi:forge:installed:app", "x": "{}"}}"#,
        "a".repeat(2 << 20)
    );
    send(huge.into_bytes())
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Neither made a tenant.
    assert!(app.raw("select client_key from tenant").await.is_empty());
}

crate::probe::on_both_stores!(
    postgres: bool,
    a_failing_handler_runs_again_after_its_backoff_and_is_given_up_after_the_last_attempt,
    a_delivery_that_is_not_json_or_too_large_is_a_client_error,
);
