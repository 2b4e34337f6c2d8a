//! Data residency: the realm migration hooks (`schedule`, `start`, `status`, `commit`,
//! `rollback` under `DATA_RESIDENCY_PATH`) that Atlassian's migration service calls with the
//! tenant's JWT, a per-tenant migration state machine kept in the store, and [`RealmMover`], the
//! trait through which the app moves its data between realms.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Tenant;
pub use crate::data::{NothingToMove, RealmMover};
use crate::error::{Error, JsonBody};
use crate::state::AppState;
use crate::store::{ClientKey, MigrationState, RealmMigration, StoreError};

/// The migration hooks, relative to `DATA_RESIDENCY_PATH`; to be nested there and layered with
/// [`ProductJwt`](crate::auth::ProductJwt).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/schedule", post(schedule))
        .route("/start", post(start))
        .route("/status", get(status))
        .route("/commit", post(commit))
        .route("/rollback", post(rollback))
}

/// A refusal the migration service understands: its error code, and ours.
struct MigrationError {
    status: StatusCode,
    code: &'static str,
    reason: &'static str,
    message: String,
}

impl MigrationError {
    fn not_scheduled(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "E0001",
            reason: "migration_not_scheduled",
            message: message.into(),
        }
    }

    /// E9999: a step failed on the app's side (the cause is logged, not sent).
    fn failed() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "E9999",
            reason: "migration_failed",
            message: "the migration step failed".to_owned(),
        }
    }
}

impl IntoResponse for MigrationError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({
                "error": self.reason,
                "message": self.message,
                "errorResponseCode": self.code,
            })),
        )
            .into_response()
    }
}

impl From<Error> for MigrationError {
    fn from(e: Error) -> Self {
        tracing::error!(error = %e, "realm migration step failed");
        Self::failed()
    }
}

impl From<StoreError> for MigrationError {
    fn from(e: StoreError) -> Self {
        Error::from(e).into()
    }
}

type Answer = Result<Response, MigrationError>;

/// A `migrationId`: text from Connect's migration service, a number (`57500`) from Forge's.
fn migration_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(text) => text,
        Id::Number(n) => n.to_string(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Schedule {
    #[serde(deserialize_with = "migration_id")]
    migration_id: String,
    location: String,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MigrationRef {
    #[serde(deserialize_with = "migration_id")]
    migration_id: String,
}

fn check_id(id: &str) -> Result<(), MigrationError> {
    // Control characters would forge lines in a log that shows the id.
    if id.is_empty() || !crate::auth::fits_id_column(id) || id.chars().any(char::is_control) {
        return Err(MigrationError {
            status: StatusCode::BAD_REQUEST,
            code: "E9999",
            reason: "invalid_migration_id",
            message: "migrationId must be 1 to 255 characters without control characters"
                .to_owned(),
        });
    }
    Ok(())
}

/// The tenant's migration with this id, or E0001.
async fn current(
    app: &AppState,
    tenant: &Tenant,
    id: &str,
) -> Result<RealmMigration, MigrationError> {
    check_id(id)?;
    app.store
        .bookkeeping()
        .realm_migration(tenant.client_key())
        .await?
        .filter(|m| m.migration_id == id)
        .ok_or_else(|| {
            MigrationError::not_scheduled("no migration with this id is scheduled for the tenant")
        })
}

fn status_of(m: &RealmMigration) -> Response {
    let mut body = json!({ "status": m.state.as_str(), "location": m.location });
    if let Some(code) = &m.error_code {
        body["errorResponseCode"] = code.clone().into();
    }
    Json(body).into_response()
}

async fn schedule(
    tenant: Tenant,
    State(app): State<AppState>,
    JsonBody(input): JsonBody<Schedule>,
) -> Answer {
    check_id(&input.migration_id)?;
    let location = input.location.trim().to_ascii_uppercase();
    if !app
        .config
        .compliance
        .data_residency_realms
        .contains(&location)
    {
        return Err(MigrationError {
            status: StatusCode::BAD_REQUEST,
            code: "E0002",
            reason: "realm_not_supported",
            message: format!("the realm {location:?} is not supported"),
        });
    }
    let key = tenant.client_key();
    // A migration that has moved data (or may have) holds where the data was: scheduling over
    // it would lose the way back. It must be committed or rolled back first.
    if let Some(running) = app.store.bookkeeping().realm_migration(key).await?
        && running.state.is_open()
    {
        if running.migration_id == input.migration_id {
            return Ok(status_of(&running));
        }
        return Err(MigrationError {
            status: StatusCode::CONFLICT,
            code: "E0004",
            reason: "migration_in_progress",
            message: format!(
                "another migration of this tenant is {}: commit or roll it back first",
                running.state
            ),
        });
    }
    let migration = RealmMigration {
        migration_id: input.migration_id,
        location,
        previous_location: None,
        state: MigrationState::Scheduled,
        error_code: None,
        start_time: input.start_time,
        end_time: input.end_time,
    };
    app.store
        .bookkeeping()
        .save_realm_migration(key, &migration)
        .await?;
    tracing::info!(tenant.client_key = %key, migration_id = %migration.migration_id, location = %migration.location, "realm migration scheduled");
    Ok(status_of(&migration))
}

async fn start(
    tenant: Tenant,
    State(app): State<AppState>,
    JsonBody(input): JsonBody<MigrationRef>,
) -> Answer {
    let mut migration = current(&app, &tenant, &input.migration_id).await?;
    if migration.state != MigrationState::Scheduled {
        return Err(MigrationError::not_scheduled(format!(
            "the migration is {}, not scheduled",
            migration.state
        )));
    }
    let key = tenant.client_key();
    let store = &app.store;
    migration.previous_location = app
        .realm_mover
        .location(store, key)
        .await
        .map_err(|e| failed(key, &e))?;
    migration.state = MigrationState::InProgress;
    app.store
        .bookkeeping()
        .save_realm_migration(key, &migration)
        .await?;
    match app
        .realm_mover
        .move_to(store, key, Some(&migration.location))
        .await
    {
        Ok(()) => migration.state = MigrationState::ReadyToCommit,
        Err(e) => {
            tracing::warn!(tenant.client_key = %key, error = %e, "realm migration of {key} failed");
            migration.state = MigrationState::Failed;
            migration.error_code = Some("E9999".to_owned());
        }
    }
    app.store
        .bookkeeping()
        .save_realm_migration(key, &migration)
        .await?;
    Ok(status_of(&migration))
}

fn failed(key: &ClientKey, e: &str) -> MigrationError {
    tracing::warn!(tenant.client_key = %key, error = %e, "realm migration of {key} failed");
    MigrationError::failed()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusQuery {
    migration_id: String,
}

async fn status(
    tenant: Tenant,
    State(app): State<AppState>,
    Query(q): Query<StatusQuery>,
) -> Answer {
    Ok(status_of(&current(&app, &tenant, &q.migration_id).await?))
}

async fn commit(
    tenant: Tenant,
    State(app): State<AppState>,
    JsonBody(input): JsonBody<MigrationRef>,
) -> Answer {
    let mut migration = current(&app, &tenant, &input.migration_id).await?;
    if migration.state == MigrationState::Committed {
        return Ok(status_of(&migration));
    }
    if migration.state != MigrationState::ReadyToCommit {
        return Err(MigrationError::not_scheduled(format!(
            "the migration is {}, not ready to commit",
            migration.state
        )));
    }
    migration.state = MigrationState::Committed;
    app.store
        .bookkeeping()
        .save_realm_migration(tenant.client_key(), &migration)
        .await?;
    tracing::info!(tenant.client_key = %tenant.client_key(), migration_id = %migration.migration_id, "realm migration committed");
    Ok(status_of(&migration))
}

async fn rollback(
    tenant: Tenant,
    State(app): State<AppState>,
    JsonBody(input): JsonBody<MigrationRef>,
) -> Answer {
    let mut migration = current(&app, &tenant, &input.migration_id).await?;
    let key = tenant.client_key();
    match migration.state {
        MigrationState::RolledBack => return Ok(status_of(&migration)),
        MigrationState::Committed => {
            return Err(MigrationError::not_scheduled(
                "a committed migration cannot be rolled back",
            ));
        }
        MigrationState::Scheduled => {}
        MigrationState::InProgress | MigrationState::ReadyToCommit | MigrationState::Failed => app
            .realm_mover
            .move_to(&app.store, key, migration.previous_location.as_deref())
            .await
            .map_err(|e| failed(key, &e))?,
    }
    migration.state = MigrationState::RolledBack;
    app.store
        .bookkeeping()
        .save_realm_migration(key, &migration)
        .await?;
    tracing::info!(tenant.client_key = %key, migration_id = %migration.migration_id, "realm migration rolled back");
    Ok(status_of(&migration))
}
