//! Personal data reporting (GDPR): every `PERSONAL_DATA_INTERVAL_DAYS`, each tenant's stored
//! Atlassian account ids are reported to Atlassian's personal data reporting API as the app, in
//! batches of at most 90, and the data of accounts reported closed is anonymised. Each tenant's
//! next due time is kept in the store, so a restart resumes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

pub use crate::data::AccountIdSource;
use crate::product::ProductError;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::{self, ClientKey};

/// The most accounts one report may carry.
pub const BATCH: usize = 90;

/// How long a tenant whose report failed waits before the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60 * 60);

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Tenants whose account ids were reported.
    pub tenants: usize,
    /// Account ids reported.
    pub accounts: usize,
    /// Accounts reported closed, whose data was anonymised.
    pub closed: usize,
    /// Accounts reported updated (the app keeps no profile data to refresh).
    pub updated: usize,
    /// Tenants whose report failed or was rate limited, to be retried later.
    pub deferred: usize,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    accounts: Vec<AccountStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountStatus {
    account_id: String,
    status: String,
}

/// An account id the API accepts: 1 to 128 letters, digits, `-` or `:`, never `unknown`.
fn reportable(account_id: &str) -> bool {
    !account_id.is_empty()
        && account_id.len() <= 128
        && account_id != "unknown"
        && account_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b':')
}

/// Reports every tenant that is due now.
pub async fn report_due(app: &AppState) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    for key in app
        .store
        .bookkeeping()
        .personal_data_due(store::now())
        .await?
    {
        match report_tenant(app, &key, &mut summary).await {
            Ok(()) => {
                summary.tenants += 1;
                let now = store::now();
                app.store
                    .bookkeeping()
                    .set_personal_data_due(
                        &key,
                        Some(now),
                        later(now, app.config.compliance.personal_data_interval),
                    )
                    .await?;
            }
            Err(e) => {
                summary.deferred += 1;
                let wait = match &e {
                    ReportError::Product(ProductError::RateLimited {
                        retry_after: Some(wait),
                    }) => *wait,
                    _ => RETRY_AFTER_FAILURE,
                };
                tracing::warn!(
                    tenant.client_key = %key,
                    error = %e,
                    "personal data report of {key} deferred by {wait:?}"
                );
                app.store
                    .bookkeeping()
                    .set_personal_data_due(&key, None, later(store::now(), wait))
                    .await?;
            }
        }
    }
    Ok(summary)
}

fn later(now: chrono::DateTime<chrono::Utc>, wait: Duration) -> chrono::DateTime<chrono::Utc> {
    now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(365))
}

#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error(transparent)]
    Product(#[from] ProductError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the tenant is no longer stored")]
    Gone,
}

async fn report_tenant(
    app: &AppState,
    key: &ClientKey,
    summary: &mut Summary,
) -> Result<(), ReportError> {
    let tenant = app
        .store
        .tenants()
        .find(key.as_str())
        .await?
        .ok_or(ReportError::Gone)?;
    let mut oldest: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for source in app.account_ids.iter() {
        for (id, stored_at) in source.account_ids(&app.store, key).await? {
            if reportable(&id) {
                let at = oldest.entry(id).or_insert(stored_at);
                *at = (*at).min(stored_at);
            }
        }
    }
    let ids: Vec<_> = oldest.into_iter().collect();
    let url = &app.config.compliance.personal_data_report_url;
    let origin = url.origin().ascii_serialization();
    for batch in ids.chunks(BATCH) {
        let accounts: Vec<_> = batch
            .iter()
            .map(|(id, stored_at)| {
                json!({
                    "accountId": id,
                    "updatedAt": stored_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                })
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "accounts": accounts }))
            .map_err(|e| ProductError::Decode(e.to_string()))?;
        let response = app
            .product
            .as_app_at(&tenant.installation, &origin)
            .send(Method::POST, url.path(), Some(body))
            .await?;
        summary.accounts += batch.len();
        if response.status() == StatusCode::NO_CONTENT {
            continue;
        }
        let reply: Reply = response
            .json()
            .await
            .map_err(|e| ProductError::Decode(e.without_url().to_string()))?;
        for account in reply.accounts {
            match account.status.as_str() {
                "closed" if batch.iter().any(|(id, _)| *id == account.account_id) => {
                    let mut rows = 0;
                    for source in app.account_ids.iter() {
                        rows += source
                            .anonymise(&app.store, key, &account.account_id)
                            .await?;
                    }
                    summary.closed += 1;
                    tracing::info!(
                        tenant.client_key = %key,
                        rows,
                        "anonymised the data of a closed account in {key}"
                    );
                }
                "updated" => summary.updated += 1,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Runs [`report_due`] every ten minutes (reporting only tenants that are due), until the
/// runtime stops.
pub fn spawn(app: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(600));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = report_due(&app).await {
                tracing::warn!(error = %e, "personal data reporting failed; next try in 10 minutes");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::reportable;

    #[test]
    fn only_ids_the_api_accepts_are_reported() {
        for ok in ["5be24ad8b1653240376955d2", "557058:f1e2d3", "a-b"] {
            assert!(reportable(ok), "{ok}");
        }
        for bad in ["", "unknown", "a b", "a/b", "ü", &"a".repeat(129)] {
            assert!(!reportable(bad), "{bad}");
        }
    }
}
