//! Lifecycle tokens applied to a tenant: each changes it once, so a replay changes nothing.

use super::{
    ClientKey, LIFECYCLE_TOKEN_MEMORY_SECS, LifecycleToken, StoreError, TenantTransaction,
};

/// Commits a lifecycle change that changed `changed` rows, recording `token` as applied to the
/// tenant; false, with nothing committed, when it changed none or `token` was applied before.
pub(super) async fn commit_applied(
    mut tx: TenantTransaction,
    changed: u64,
    key: &ClientKey,
    token: &LifecycleToken,
) -> Result<bool, StoreError> {
    if changed == 0 || !remember_token(&mut tx, key, token).await? {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Records that `token` was applied to the tenant; false if it had been already.
async fn remember_token(
    tx: &mut TenantTransaction,
    key: &ClientKey,
    token: &LifecycleToken,
) -> Result<bool, StoreError> {
    let fresh = tx
        .query(
            "insert into lifecycle_token (client_key, token_id, expires_at) \
             values ($1, $2, $3) on conflict do nothing",
        )
        .bind(key.as_str())
        .bind(&token.id)
        .bind(token.expires_at.saturating_add(LIFECYCLE_TOKEN_MEMORY_SECS))
        .execute()
        .await?;
    Ok(fresh > 0)
}
