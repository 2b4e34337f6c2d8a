//! What the library asks of the sample about its data: where each tenant's is (data residency)
//! and which Atlassian accounts it names (personal data reporting).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use connect_axum::personal_data::AccountIdSource;
use connect_axum::residency::RealmMover;
use connect_axum::store::StoreError;
use connect_axum::store::{ClientKey, Store};

/// The notes' authors.
pub struct NoteAuthors;

#[async_trait]
impl AccountIdSource for NoteAuthors {
    async fn account_ids(
        &self,
        store: &Store,
        key: &ClientKey,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let mut tx = store.tenant_transaction(key).await?;
        tx.query(
            "select author, min(created_at) from note \
             where client_key = $1 and author is not null group by author order by author",
        )
        .bind(key.as_str())
        .fetch_all()
        .await
    }

    /// The account's notes keep their text, without an author.
    async fn anonymise(
        &self,
        store: &Store,
        key: &ClientKey,
        account_id: &str,
    ) -> Result<u64, StoreError> {
        let mut tx = store.tenant_transaction(key).await?;
        let changed = tx
            .query("update note set author = null where client_key = $1 and author = $2")
            .bind(key.as_str())
            .bind(account_id)
            .execute()
            .await?;
        tx.commit().await?;
        Ok(changed)
    }
}

/// The sample keeps where a tenant's data lives as one row (none: the realm it was installed in).
pub struct StoredLocation;

impl StoredLocation {
    /// Where the tenant's data is (`None`: the realm it was installed in).
    pub async fn read(store: &Store, key: &ClientKey) -> Result<Option<String>, StoreError> {
        let mut tx = store.tenant_transaction(key).await?;
        let row: Option<(String,)> = tx
            .query("select location from data_location where client_key = $1")
            .bind(key.as_str())
            .fetch_optional()
            .await?;
        Ok(row.map(|(location,)| location))
    }
}

#[async_trait]
impl RealmMover for StoredLocation {
    async fn location(&self, store: &Store, key: &ClientKey) -> Result<Option<String>, String> {
        Self::read(store, key).await.map_err(|e| e.to_string())
    }

    async fn move_to(
        &self,
        store: &Store,
        key: &ClientKey,
        location: Option<&str>,
    ) -> Result<(), String> {
        let moved = async {
            let mut tx = store.tenant_transaction(key).await?;
            match location {
                Some(location) => tx
                    .query(
                        "insert into data_location (client_key, location) values ($1, $2) \
                         on conflict (client_key) do update set location = excluded.location",
                    )
                    .bind(key.as_str())
                    .bind(location),
                None => tx
                    .query("delete from data_location where client_key = $1")
                    .bind(key.as_str()),
            }
            .execute()
            .await?;
            tx.commit().await
        };
        moved.await.map_err(|e: StoreError| e.to_string())
    }
}
