//! Many tenants at once through the real router: each writes, lists and deletes notes on issue
//! keys every tenant shares, while some reinstall with a new sharedSecret and some uninstall and
//! come back. Each tenant ends with exactly the notes it was told it wrote, no response ever
//! carries another tenant's data, and the only refusals are those the lifecycle calls for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::StatusCode;
use connect_axum_testing::on_both_stores;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::helpers::*;

/// Issue keys repeat across sites, so every tenant writes to the same ones.
const ISSUES: [&str; 2] = ["PROJ-1", "PROJ-2"];
/// Rounds of work per tenant.
const ROUNDS: usize = 8;
/// Rounds an uninstalled tenant keeps trying before it reinstalls.
const AWAY: usize = 3;
/// Requests one tenant may get past authentication: well under the burst of the rate limit the
/// test sets (100/s, bursts of 200), which so must never answer 429.
const MAX_REQUESTS_PER_TENANT: usize = 100;

/// How many tenants run at once: 200, or `CONNECT_AXUM_CONCURRENCY_TENANTS`.
fn tenant_count() -> usize {
    std::env::var("CONNECT_AXUM_CONCURRENCY_TENANTS").map_or(200, |n| {
        n.parse()
            .expect("CONNECT_AXUM_CONCURRENCY_TENANTS is a number")
    })
}

/// Each tenant has at most one request in flight, so the concurrency limit (default 1024) is
/// raised to the tenant count only when more tenants than that are asked for. The rate limit is on
/// (it is off by default), at a rate each tenant stays under. The install key
/// server runs on the test's own runtime, which the tenants signing their installs keep busy:
/// its first answer may take longer than the harness's 1 s.
fn limits(name: &str) -> Option<String> {
    match name {
        "MAX_CONCURRENT_REQUESTS" => Some(tenant_count().max(1024).to_string()),
        "TENANT_RATE_LIMIT" => Some("100".to_owned()),
        "INSTALL_KEYS_TIMEOUT_MS" => Some("10000".to_owned()),
        // Hundreds of requests at once queue for a pool of 5 on a loaded machine: a wait for a
        // connection there is no outage.
        "DB_ACQUIRE_TIMEOUT_MS" => Some("10000".to_owned()),
        _ => None,
    }
}

fn notes_path(issue: &str) -> String {
    format!("/api/issues/{issue}/notes")
}

/// What happens to a tenant's installation while it works.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Steady,
    /// Reinstalls with a new sharedSecret before round `at`.
    Rotate {
        at: usize,
    },
    /// Uninstalls before round `at` and reinstalls [`AWAY`] rounds later.
    Leave {
        at: usize,
        new_secret: bool,
    },
}

impl Plan {
    /// A quarter of the tenants each way, their events spread over the rounds.
    fn of(index: usize) -> Self {
        let at = 1 + (index / 4) % (ROUNDS - AWAY - 1);
        match index % 4 {
            0 => Plan::Steady,
            1 => Plan::Rotate { at },
            2 => Plan::Leave {
                at,
                new_secret: false,
            },
            _ => Plan::Leave {
                at,
                new_secret: true,
            },
        }
    }
}

/// One tenant's site: its current secret, and what the app acknowledged it wrote.
struct Site {
    app: Arc<TestApp>,
    index: usize,
    tenant: TestTenant,
    /// Secrets a reinstall replaced; the app must refuse them from then on.
    old_secrets: Vec<String>,
    installed: bool,
    /// Notes acknowledged as created and not acknowledged as deleted: id → (issue key, body).
    notes: BTreeMap<i64, (String, String)>,
    /// Every id the app acknowledged creating for this tenant.
    created: BTreeSet<i64>,
    written: usize,
    /// Requests that got past authentication, which is what the rate limiter counts.
    authenticated: usize,
}

type Listed = Vec<(i64, String, String)>;

impl Site {
    fn name(&self) -> String {
        format!("tenant-{}", self.index)
    }

    async fn send(&mut self, method: &str, target: &str, body: Option<&Value>) -> TestResponse {
        let response = self.app.signed(&self.tenant, method, target, body).await;
        self.assert_only_own_data(&response);
        if response.status != StatusCode::UNAUTHORIZED {
            self.authenticated += 1;
        }
        response
    }

    /// Every note body, client key and base URL names its tenant, so another tenant's name in
    /// a response is another tenant's data.
    fn assert_only_own_data(&self, response: &TestResponse) {
        let text = String::from_utf8_lossy(&response.body);
        let own = self.index.to_string();
        for (at, prefix) in text.match_indices("tenant-") {
            let digits: String = text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            assert!(
                digits.is_empty() || digits == own,
                "{} was sent another tenant's data: {text}",
                self.name()
            );
        }
    }

    /// While uninstalled, every request is refused and changes nothing.
    #[track_caller]
    fn refused_while_uninstalled(&self, response: &TestResponse) -> bool {
        if self.installed {
            return false;
        }
        response.assert_error(StatusCode::UNAUTHORIZED, "tenant_uninstalled");
        true
    }

    #[track_caller]
    fn assert_status(&self, response: &TestResponse, status: StatusCode, what: &str) {
        assert_eq!(
            response.status,
            status,
            "{} {what}: {}",
            self.name(),
            String::from_utf8_lossy(&response.body)
        );
    }

    /// Creates a note; its id once acknowledged.
    async fn create(&mut self, issue: &str) -> Option<i64> {
        self.written += 1;
        let body = format!("{} note {}", self.name(), self.written);
        let response = self
            .send("POST", &notes_path(issue), Some(&json!({ "body": body })))
            .await;
        if self.refused_while_uninstalled(&response) {
            return None;
        }
        self.assert_status(&response, StatusCode::CREATED, "creates a note");
        let note = response.json();
        assert_eq!(
            (note["issueKey"].as_str(), note["body"].as_str()),
            (Some(issue), Some(body.as_str()))
        );
        let id = note["id"].as_i64().unwrap();
        assert!(self.created.insert(id), "{} got id {id} twice", self.name());
        self.notes.insert(id, (issue.to_owned(), body));
        Some(id)
    }

    /// The notes on `issue` the tenant should see, in the API's order (by id).
    fn expected(&self, issue: &str) -> Listed {
        self.notes
            .iter()
            .filter(|(_, (on, _))| on == issue)
            .map(|(id, (on, body))| (*id, on.clone(), body.clone()))
            .collect()
    }

    /// Lists `issue` and checks it is exactly what the tenant wrote there.
    async fn list(&mut self, issue: &str) {
        let response = self.send("GET", &notes_path(issue), None).await;
        if self.refused_while_uninstalled(&response) {
            return;
        }
        self.assert_status(&response, StatusCode::OK, "lists notes");
        let listed: Listed = response.json()["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_i64().unwrap(),
                    n["issueKey"].as_str().unwrap().to_owned(),
                    n["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (id, ..) in &listed {
            assert!(
                self.created.contains(id),
                "{} was shown note {id}, which it never created",
                self.name()
            );
        }
        assert_eq!(
            listed,
            self.expected(issue),
            "{} lists {issue}",
            self.name()
        );
    }

    async fn delete_oldest(&mut self) {
        let Some((&id, (issue, _))) = self.notes.first_key_value() else {
            return;
        };
        let target = format!("{}/{id}", notes_path(issue));
        let response = self.send("DELETE", &target, None).await;
        if self.refused_while_uninstalled(&response) {
            return;
        }
        self.assert_status(&response, StatusCode::NO_CONTENT, "deletes its note");
        self.notes.remove(&id);
    }

    /// Tries to delete note `id` on `issue`, one this tenant never created: ids are shared and
    /// sequential, so the one below its newest is most likely another tenant's, on the same key.
    async fn delete_foreign(&mut self, issue: &str, id: i64) {
        if self.created.contains(&id) {
            return;
        }
        let response = self
            .send("DELETE", &format!("{}/{id}", notes_path(issue)), None)
            .await;
        let what = format!("deletes note {id} on {issue}, which it never created");
        self.assert_status(&response, StatusCode::NOT_FOUND, &what);
        response.assert_error(StatusCode::NOT_FOUND, "not_found");
    }

    async fn hook(&self, event: &str) {
        let response = self.app.hook(&self.tenant, event).await;
        self.assert_only_own_data(&response);
        self.assert_status(&response, StatusCode::NO_CONTENT, event);
    }

    async fn uninstall(&mut self) {
        self.hook("uninstalled").await;
        self.installed = false;
    }

    /// Reinstalls: same clientKey, and a new sharedSecret when the site rotated it.
    async fn reinstall(&mut self, new_secret: bool) {
        if new_secret {
            let fresh = TestTenant::new(&self.name()).secret;
            self.old_secrets
                .push(std::mem::replace(&mut self.tenant.secret, fresh));
        }
        self.hook("installed").await;
        self.installed = true;
        self.assert_old_secrets_refused().await;
    }

    /// Reads and writes signed with a replaced secret are refused, and write nothing.
    async fn assert_old_secrets_refused(&mut self) {
        for secret in self.old_secrets.clone() {
            let old = TestTenant {
                secret,
                ..self.tenant.clone()
            };
            let path = notes_path(ISSUES[0]);
            let body = json!({ "body": format!("{} with an old secret", self.name()) });
            for response in [
                self.app.signed(&old, "GET", &path, None).await,
                self.app.signed(&old, "POST", &path, Some(&body)).await,
            ] {
                self.assert_only_own_data(&response);
                response.assert_error(StatusCode::UNAUTHORIZED, "bad_signature");
            }
        }
    }
}

/// One tenant's task: install, wait for everyone, then work through the rounds and its plan.
async fn run_site(app: Arc<TestApp>, index: usize, start: Arc<Barrier>) -> Site {
    let tenant = app
        .install_tenant(TestTenant::new(&format!("tenant-{index}")))
        .await;
    let mut site = Site {
        app,
        index,
        tenant,
        old_secrets: Vec::new(),
        installed: true,
        notes: BTreeMap::new(),
        created: BTreeSet::new(),
        written: 0,
        authenticated: 0,
    };
    start.wait().await;
    for round in 0..ROUNDS {
        match Plan::of(index) {
            Plan::Rotate { at } if round == at => site.reinstall(true).await,
            Plan::Leave { at, .. } if round == at => site.uninstall().await,
            Plan::Leave { at, new_secret } if round == at + AWAY => {
                site.reinstall(new_secret).await;
                for issue in ISSUES {
                    site.list(issue).await;
                }
            }
            _ => {}
        }
        let issue = ISSUES[round % ISSUES.len()];
        if let Some(id) = site.create(issue).await {
            site.delete_foreign(issue, id - 1).await;
        }
        site.list(issue).await;
        if round % 3 == 2 {
            site.delete_oldest().await;
        }
    }
    site.assert_old_secrets_refused().await;
    site
}

async fn many_tenants_at_once_each_keep_exactly_their_own_notes(app: TestApp) {
    let app = Arc::new(app);
    let count = tenant_count();
    let start = Arc::new(Barrier::new(count));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        tasks.spawn(run_site(app.clone(), index, start.clone()));
    }
    let mut sites = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        sites.push(done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())));
    }

    assert_eq!(app.store().tenants().list().await.unwrap().len(), count);
    for site in &mut sites {
        for issue in ISSUES {
            site.list(issue).await;
        }
        let record = app.stored_tenant(&site.tenant.client_key).await;
        assert!(record.is_installed() && record.enabled, "{}", site.name());
        assert_eq!(
            record.installation.shared_secret.expose(),
            site.tenant.secret
        );
        for issue in ISSUES {
            let stored: Listed = issue_notes::store::list_notes(
                app.store(),
                &record.installation.client_key,
                issue,
                0,
                100_000,
            )
            .await
            .unwrap()
            .notes
            .into_iter()
            .map(|n| (n.id, n.issue_key, n.body))
            .collect();
            assert_eq!(
                stored,
                site.expected(issue),
                "{} stores {issue}",
                site.name()
            );
        }
        assert!(
            site.authenticated <= MAX_REQUESTS_PER_TENANT,
            "{} made {} requests, enough to meet the rate limit",
            site.name(),
            site.authenticated
        );
    }
}

on_both_stores!(
    app = sample(),
    #[multi_thread(vars = limits)]
    many_tenants_at_once_each_keep_exactly_their_own_notes,
);
