//! Jira webhooks of the notes feature.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::IssueKey;
use connect_axum::app::AppState;
use connect_axum::auth::Tenant;
use connect_axum::error::{JsonBody, Result};

/// The part of a `jira:issue_*` webhook body the feature reads.
#[derive(Debug, Deserialize)]
pub(crate) struct IssueEvent {
    pub issue: EventIssue,
}

/// The issue a webhook is about.
#[derive(Debug, Deserialize)]
pub(crate) struct EventIssue {
    pub key: String,
}

/// `jira:issue_deleted`: the tenant's notes on that issue go with it. Deliveries repeat, so a
/// second one finds nothing and still answers 204.
pub(crate) async fn issue_deleted(
    tenant: Tenant,
    State(app): State<AppState>,
    JsonBody(event): JsonBody<IssueEvent>,
) -> Result<StatusCode> {
    let issue_key = IssueKey::parse(&event.issue.key)?;
    let notes = super::notes::Notes::of_tenant(&app, tenant.client_key()).await?;
    let deleted = notes.delete_issue(issue_key.as_str()).await?;
    tracing::info!(
        tenant.client_key = %tenant.client_key(),
        issue_key = issue_key.as_str(),
        deleted,
        "issue {} deleted: removed {deleted} notes", issue_key.as_str()
    );
    Ok(StatusCode::NO_CONTENT)
}
