//! The notes feature's Forge events: a deleted issue takes its notes with it, as the Connect
//! webhook does, whichever door the site came in by.

use async_trait::async_trait;
use connect_axum::app::AppState;
use connect_axum::state::{ForgeEvent, ForgeEventHandler, HandlerError};

use super::IssueKey;

/// The Forge event of a deleted Jira issue.
pub(crate) const ISSUE_DELETED: &str = "avi:jira:deleted:issue";

/// Deletes the tenant's notes on an issue Jira deleted. A redelivery finds nothing to delete.
pub(crate) struct IssueDeleted;

#[async_trait]
impl ForgeEventHandler for IssueDeleted {
    fn handles(&self, event_type: &str) -> bool {
        event_type == ISSUE_DELETED
    }

    async fn handle(&self, app: &AppState, event: &ForgeEvent) -> Result<(), HandlerError> {
        let Some(key) = event.payload["issue"]["key"].as_str() else {
            // Nothing to act on; running it again would not change that.
            tracing::warn!(tenant.client_key = %event.client_key, "an issue event without an issue key");
            return Ok(());
        };
        let Ok(issue_key) = IssueKey::parse(key) else {
            return Ok(());
        };
        let notes = super::notes::Notes::of_tenant(app, &event.client_key).await?;
        let deleted = notes.delete_issue(issue_key.as_str()).await?;
        tracing::info!(
            tenant.client_key = %event.client_key,
            issue_key = issue_key.as_str(),
            deleted,
            "issue {} deleted (Forge event): removed {deleted} notes",
            issue_key.as_str()
        );
        Ok(())
    }
}
