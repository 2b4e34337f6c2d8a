//! The sweep of a Forge Container's Forge SQL migrations over every installation, so that an
//! installation's first user finds its database ready; a request still brings its own
//! installation up to date first ([`AppState::sql_in`]). It starts after the server listens and
//! never delays the health check.

use std::time::Duration;

use crate::forge::sql::list_installations;
use crate::state::AppState;

/// How long after the start the first sweep runs.
pub const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(10);

/// How long between two sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// Runs [`sweep`] in the background, now and then, while the app runs as a Forge Container with
/// migrations to apply; does nothing otherwise.
pub fn spawn(state: AppState) {
    if state.forge_sql().is_none() || state.sql_migrations().names().next().is_none() {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_SWEEP_AFTER).await;
        loop {
            sweep(&state).await;
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    });
}

/// Lists the app's installations and applies the migrations each one lacks; returns how many
/// failed (each logged). A listing that fails is logged and tried at the next sweep.
pub async fn sweep(state: &AppState) -> usize {
    let Some(forge_sql) = state.forge_sql() else {
        return 0;
    };
    let installations = match list_installations(forge_sql).await {
        Ok(installations) => installations,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the installations to migrate: {e}");
            return 0;
        }
    };
    let failed = state.sql_migrations().sweep(forge_sql, installations).await;
    failed.len()
}
