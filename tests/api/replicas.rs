//! Two server processes on one Postgres: a change seen by one is honoured by the other within a
//! second, though each resolves tenants from its own memory.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

struct Replica(ServerProcess);

impl Replica {
    async fn start(app: &TestApp) -> Self {
        Replica(
            ServerProcess::start(&[
                ("DATABASE_URL", &app.database_url),
                ("BASE_URL", BASE_URL),
                ("INSTALL_KEYS_URL", &app.keys.url),
                ("RUST_LOG", "warn"),
            ])
            .await,
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", self.0.url))
            .header("authorization", format!("JWT {token}"));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn hook(&self, tenant: &TestTenant, event: &str) -> u16 {
        let path = format!("/{event}");
        let token = match event {
            "installed" | "uninstalled" => install_token(tenant, &path, json!({})),
            _ => tenant.token("POST", &path),
        };
        self.call("POST", &path, &token, Some(&tenant.payload(event)))
            .await
            .0
    }

    /// Polls `GET NOTES` as `tenant` until it answers `status` with reason `code`; returns how long that took.
    async fn until(&self, tenant: &TestTenant, status: u16, code: Option<&str>) -> Duration {
        let started = Instant::now();
        loop {
            let (got, body) = self
                .call("GET", NOTES, &tenant.token("GET", NOTES), None)
                .await;
            if got == status && code.is_none_or(|c| body["error"] == c) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "still {got} {body} after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_change_through_one_replica_is_honoured_by_the_other_within_a_second() {
    let app = TestApp::postgres().await;
    let one = Replica::start(&app).await;
    let two = Replica::start(&app).await;

    let tenant = TestTenant::new("acme");
    assert_eq!(one.hook(&tenant, "installed").await, 204);
    two.until(&tenant, 200, None).await;

    assert_eq!(one.hook(&tenant, "uninstalled").await, 204);
    two.until(&tenant, 401, Some("tenant_uninstalled")).await;

    let mut rotated = tenant.clone();
    rotated.secret = "rotated-secret".to_owned();
    assert_eq!(one.hook(&rotated, "installed").await, 204);
    two.until(&rotated, 200, None).await;
    two.until(&tenant, 401, Some("bad_signature")).await;

    assert_eq!(two.hook(&rotated, "disabled").await, 204);
    one.until(&rotated, 401, Some("tenant_disabled")).await;
    assert_eq!(one.hook(&rotated, "enabled").await, 204);
    two.until(&rotated, 200, None).await;
}
