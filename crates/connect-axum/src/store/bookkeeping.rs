//! The store's bookkeeping of tenants: their realm migrations and when their personal data is
//! next reported.

use chrono::{DateTime, Utc};

use super::{ClientKey, Database, RealmMigration, StoreError, now};

/// The bookkeeping of a [`Store`](super::Store), from [`Store::bookkeeping`](super::Store::bookkeeping).
#[derive(Clone, Copy)]
pub struct Bookkeeping<'s> {
    pub(super) db: &'s Database,
}

/// A `realm_migration` row, its state still text.
#[derive(serde::Deserialize)]
struct RealmMigrationRow {
    migration_id: String,
    location: String,
    previous_location: Option<String>,
    state: String,
    error_code: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
}

impl TryFrom<RealmMigrationRow> for RealmMigration {
    type Error = StoreError;

    fn try_from(row: RealmMigrationRow) -> Result<Self, StoreError> {
        Ok(RealmMigration {
            migration_id: row.migration_id,
            location: row.location,
            previous_location: row.previous_location,
            state: row
                .state
                .parse()
                .map_err(|e: String| StoreError::Decode(e.into()))?,
            error_code: row.error_code,
            start_time: row.start_time,
            end_time: row.end_time,
        })
    }
}

impl Bookkeeping<'_> {
    /// The tenant's realm migration, if one was ever scheduled.
    pub async fn realm_migration(
        &self,
        key: &ClientKey,
    ) -> Result<Option<RealmMigration>, StoreError> {
        self.db
            .connection()
            .await?
            .query(
                "select migration_id, location, previous_location, state, error_code, \
                 start_time, end_time from realm_migration where client_key = $1",
            )
            .bind(key.as_str())
            .fetch_optional::<RealmMigrationRow>()
            .await?
            .map(RealmMigration::try_from)
            .transpose()
    }

    /// Records the tenant's realm migration (replacing an earlier one).
    pub async fn save_realm_migration(
        &self,
        key: &ClientKey,
        m: &RealmMigration,
    ) -> Result<(), StoreError> {
        self.db
            .connection()
            .await?
            .query(
                "insert into realm_migration (client_key, migration_id, location, \
                 previous_location, state, error_code, start_time, end_time, updated_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (client_key) do update set \
                 migration_id = excluded.migration_id, location = excluded.location, \
                 previous_location = excluded.previous_location, state = excluded.state, \
                 error_code = excluded.error_code, start_time = excluded.start_time, \
                 end_time = excluded.end_time, updated_at = excluded.updated_at",
            )
            .bind(key.as_str())
            .bind(&m.migration_id)
            .bind(&m.location)
            .bind(&m.previous_location)
            .bind(m.state.as_str())
            .bind(&m.error_code)
            .bind(&m.start_time)
            .bind(&m.end_time)
            .bind(now())
            .execute()
            .await?;
        Ok(())
    }

    /// Installed tenants whose personal data report is due at `now` (never reported, or due).
    pub async fn personal_data_due(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClientKey>, StoreError> {
        let keys: Vec<(String,)> = self
            .db
            .connection()
            .await?
            .query(
                "select t.client_key from tenant t \
                 left join personal_data_report r on r.client_key = t.client_key \
                 where t.uninstalled_at is null and t.origin = 'connect' and (r.next_due_at is null or r.next_due_at <= $1) \
                 order by t.client_key",
            )
            .bind(now)
            .fetch_all()
            .await?;
        Ok(keys.into_iter().map(|(key,)| ClientKey::new(key)).collect())
    }

    /// Records a tenant's report (`reported_at`, when one was made) and when the next is due.
    pub async fn set_personal_data_due(
        &self,
        key: &ClientKey,
        reported_at: Option<DateTime<Utc>>,
        next_due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.db
            .connection()
            .await?
            .query(
                "insert into personal_data_report (client_key, last_reported_at, next_due_at) \
                 values ($1, $2, $3) on conflict (client_key) do update set \
                 last_reported_at = coalesce(excluded.last_reported_at, personal_data_report.last_reported_at), \
                 next_due_at = excluded.next_due_at",
            )
            .bind(key.as_str())
            .bind(reported_at)
            .bind(next_due_at)
            .execute()
            .await?;
        Ok(())
    }
}
