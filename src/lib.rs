//! Issue notes, the sample app built on connect-axum: notes on Jira issues, scoped to the tenant
//! that wrote them, with an issue panel, a webhook, personal data reporting of the notes' authors
//! and a realm mover for data residency.
//!
//! Issue keys repeat across sites, so a note is always addressed by (tenant, issue key, id).
//! A user's token (context, session, Forge UI) reaches only the issue it was issued for and
//! deletes only its user's notes; the site's and the app's own tokens reach every note.

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Form, Json, Router, middleware};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use connect_axum::app::AppState;
use connect_axum::auth::container::ContainerInvocation;
use connect_axum::auth::{self, ContextJwt, Owner, ProductJwt, Tenant};
use connect_axum::config::Config;
use connect_axum::error::{Error, JsonBody, PathParams, QueryParams, Result};
use connect_axum::server::{Builder, ConnectApp};
use connect_axum::store::AppMigrations;

mod forge;
pub mod forge_sql;
pub mod notes;
mod page;
mod realm;
pub mod store;

pub use realm::{NoteAuthors, StoredLocation};
mod webhooks;

use notes::Notes;
use store::{NewNote, Note, NoteCreation, NoteDeletion};

pub use store::NoteCaps;

/// The sample's descriptor, served with `baseUrl` = `BASE_URL`.
pub const DESCRIPTOR: &str = include_str!("../atlassian-connect.json");

/// The longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// Notes in one page of `GET …/notes` unless `limit` says otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// The most notes one page may hold.
pub const MAX_PAGE_SIZE: u32 = 100;

impl Default for NoteCaps {
    /// 1 000 notes on one issue, 100 000 in all.
    fn default() -> Self {
        Self {
            per_issue: 1_000,
            per_tenant: 100_000,
        }
    }
}

impl NoteCaps {
    /// `NOTES_PER_ISSUE_LIMIT` and `NOTES_PER_TENANT_LIMIT`, each a positive integer, the
    /// [`Default`] where unset.
    ///
    /// # Errors
    /// The variable whose value is not a positive integer.
    pub fn from_env() -> std::result::Result<Self, String> {
        let read = |name: &str, default: u64| match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: {v:?} is not a positive integer")),
        };
        let defaults = Self::default();
        Ok(Self {
            per_issue: read("NOTES_PER_ISSUE_LIMIT", defaults.per_issue)?,
            per_tenant: read("NOTES_PER_TENANT_LIMIT", defaults.per_tenant)?,
        })
    }
}

/// The sample's own migrations, beside the library's.
pub fn migrations() -> AppMigrations {
    AppMigrations::new(
        &sqlx::migrate!("migrations/postgres"),
        &sqlx::migrate!("migrations/sqlite"),
    )
}

/// The sample app as a server: its descriptor, its migrations, where it keeps account ids and
/// how it moves a tenant's data between realms, and every route of it, each group behind the
/// authentication it needs; with the [`NoteCaps`] defaults.
pub fn app(config: Config) -> Builder {
    app_with(config, NoteCaps::default())
}

/// [`app`] with `caps` on what one tenant may store.
pub fn app_with(config: Config, caps: NoteCaps) -> Builder {
    ConnectApp::builder(config)
        .descriptor(DESCRIPTOR)
        .migrations(migrations())
        // In a Forge Container the notes live in each installation's Forge SQL database.
        .sql_migrations(forge_sql::migrations())
        .account_ids(realm::NoteAuthors)
        .realm_mover(realm::StoredLocation)
        // A product JWT bound to the request, or the iframe's context / session token.
        .routes::<ContextJwt>(router().layer(Extension(caps)))
        // A product JWT bound to the request: the issue panel page and webhooks.
        .routes::<ProductJwt>(product_router())
        // A Forge Invocation Token (RS256, Forge's JWKS) of a mapped installation.
        .forge_routes(forge_router().layer(Extension(caps)))
        // Forge product events, run from the durable queue.
        .forge_events(forge::IssueDeleted)
        // No authentication: the panel's icon.
        .public_routes(public_router())
}

/// The notes API; to be layered with [`ContextJwt`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/issues/{issue_key}/notes",
            get(list_notes).post(create_note),
        )
        .route("/api/issues/{issue_key}/notes/{id}", delete(delete_note))
}

/// The notes API for a Forge app's remote calls (`/forge` + the same paths), refusing a site whose
/// licence Forge says is inactive ([`auth::require_license`]: the free sample gets none); to be layered with
/// [`require_forge`](connect_axum::auth::require_forge). The handlers are the Connect ones: a site reaches
/// the same notes through either.
pub fn forge_router() -> Router<AppState> {
    Router::new()
        .route(
            "/forge/api/issues/{issue_key}/notes",
            get(list_notes).post(create_note),
        )
        .route(
            "/forge/api/issues/{issue_key}/notes/{id}",
            delete(delete_note),
        )
        .route_layer(middleware::from_fn(auth::require_license))
}

/// The issue panel page and the webhooks; to be layered with [`ProductJwt`].
pub fn product_router() -> Router<AppState> {
    Router::new()
        .route("/issue-notes", get(page::issue_notes))
        .route("/webhooks/issue-deleted", post(webhooks::issue_deleted))
}

/// Public assets of the feature: the panel's icon.
pub fn public_router() -> Router<AppState> {
    Router::new().route("/icon.svg", get(page::icon))
}

/// A validated Jira issue key such as `PROJ-12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueKey(String);

impl IssueKey {
    /// Accepts `^[A-Z][A-Z0-9_]+-[0-9]+$`, at most 255 characters.
    pub fn parse(key: &str) -> Result<Self> {
        let valid = key.len() <= 255
            && key.split_once('-').is_some_and(|(project, number)| {
                let mut chars = project.bytes();
                chars.next().is_some_and(|c| c.is_ascii_uppercase())
                    && project.len() >= 2
                    && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
                    && !number.is_empty()
                    && number.bytes().all(|c| c.is_ascii_digit())
            });
        if valid {
            Ok(Self(key.to_owned()))
        } else {
            Err(Error::bad_request(
                "invalid_issue_key",
                "the issue key must look like PROJ-123",
            ))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of `POST …/notes`, as JSON or as a form.
#[derive(Debug, Deserialize)]
pub struct CreateNote {
    /// The note's text: 1 to [`MAX_NOTE_CHARS`] characters, without NUL.
    pub body: String,
}

impl<S: Send + Sync> FromRequest<S> for CreateNote {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        if auth::is_form(request.headers()) {
            let Form(note) = Form::<CreateNote>::from_request(request, state)
                .await
                .map_err(|e| Error::bad_request("invalid_form", e.body_text()))?;
            Ok(note)
        } else {
            let JsonBody(note) = JsonBody::<CreateNote>::from_request(request, state).await?;
            Ok(note)
        }
    }
}

/// The query of `GET …/notes`: a page size and where the page starts.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Notes in the page, 1 to [`MAX_PAGE_SIZE`] ([`DEFAULT_PAGE_SIZE`] without it).
    pub limit: Option<String>,
    /// The `next` of the page before; without it, the first page.
    pub cursor: Option<String>,
}

/// A page of notes: `next` is the cursor of the following page, `null` on the last.
#[derive(Debug, Serialize)]
pub struct NotesPage {
    /// The page's notes, oldest first.
    pub notes: Vec<Note>,
    /// The `cursor` of the following page; `None` (`null`) on the last.
    pub next: Option<String>,
}

/// The cursor of the page after the note `id`: opaque to clients, base64url of the id.
fn cursor_after(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

fn parse_page(query: &PageQuery) -> Result<(i64, u32)> {
    let limit = match &query.limit {
        None => DEFAULT_PAGE_SIZE,
        Some(limit) => limit
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                Error::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {MAX_PAGE_SIZE}"),
                )
            })?,
    };
    let after = match &query.cursor {
        None => 0,
        Some(cursor) => URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|id| id.parse::<i64>().ok())
            .filter(|id| *id > 0)
            .ok_or_else(|| {
                Error::bad_request("invalid_cursor", "the cursor is not one this API gave")
            })?,
    };
    Ok((after, limit))
}

/// Lists a page of the tenant's notes on an issue, oldest first (`?limit=`, `?cursor=`).
async fn list_notes(
    tenant: Tenant,
    State(app): State<AppState>,
    invocation: Option<Extension<ContainerInvocation>>,
    PathParams(issue_key): PathParams<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<NotesPage>> {
    let issue_key = IssueKey::parse(&issue_key)?;
    let (after, limit) = parse_page(&query)?;
    tenant.require_issue(issue_key.as_str())?;
    let notes = Notes::of_request(&app, &tenant, invocation.as_deref()).await?;
    let page = notes.list(issue_key.as_str(), after, limit).await?;
    let next = match (page.more, page.notes.last()) {
        (true, Some(last)) => Some(cursor_after(last.id)),
        _ => None,
    };
    Ok(Json(NotesPage {
        notes: page.notes,
        next,
    }))
}

/// Adds a note by the requesting user.
async fn create_note(
    tenant: Tenant,
    State(app): State<AppState>,
    invocation: Option<Extension<ContainerInvocation>>,
    caps: Option<Extension<NoteCaps>>,
    PathParams(issue_key): PathParams<String>,
    input: CreateNote,
) -> Result<(StatusCode, Json<Note>)> {
    let issue_key = IssueKey::parse(&issue_key)?;
    tenant.require_issue(issue_key.as_str())?;
    let chars = input.body.chars().count();
    // Postgres text cannot hold NUL; refuse it on every store alike.
    if chars == 0 || chars > MAX_NOTE_CHARS || input.body.contains('\0') {
        return Err(Error::bad_request(
            "invalid_note",
            format!("the note body must be 1 to {MAX_NOTE_CHARS} characters, without NUL"),
        ));
    }
    let note = NewNote {
        issue_key: issue_key.0,
        body: input.body,
        author: tenant.account_id().map(str::to_owned),
    };
    let caps = caps.map_or_else(NoteCaps::default, |Extension(caps)| caps);
    let notes = Notes::of_request(&app, &tenant, invocation.as_deref()).await?;
    match notes.create(note, caps).await? {
        NoteCreation::Created(note) => Ok((StatusCode::CREATED, Json(note))),
        NoteCreation::IssueFull => Err(Error::Conflict {
            reason: "issue_note_limit",
            message: format!("this issue holds {} notes, the most it may", caps.per_issue),
        }),
        NoteCreation::TenantFull => Err(Error::Conflict {
            reason: "tenant_note_limit",
            message: format!("this site holds {} notes, the most it may", caps.per_tenant),
        }),
    }
}

/// Deletes one of the tenant's notes; another tenant's note is as absent as a missing one. A
/// user's token deletes only that user's notes (403 `not_note_author` otherwise).
async fn delete_note(
    tenant: Tenant,
    State(app): State<AppState>,
    invocation: Option<Extension<ContainerInvocation>>,
    PathParams((issue_key, id)): PathParams<(String, String)>,
) -> Result<StatusCode> {
    let issue_key = IssueKey::parse(&issue_key)?;
    let id: i64 = id
        .parse()
        .map_err(|_| Error::bad_request("invalid_note_id", "the note id must be an integer"))?;
    tenant.require_issue(issue_key.as_str())?;
    let author = match tenant.may_change() {
        Owner::Any => None,
        Owner::Account(account) => Some(account),
        Owner::Nobody => return Err(not_note_author()),
    };
    let notes = Notes::of_request(&app, &tenant, invocation.as_deref()).await?;
    match notes.delete(issue_key.as_str(), id, author).await? {
        NoteDeletion::Deleted => Ok(StatusCode::NO_CONTENT),
        NoteDeletion::Missing => Err(Error::NotFound),
        NoteDeletion::OtherAuthor => Err(not_note_author()),
    }
}

fn not_note_author() -> Error {
    Error::Forbidden {
        reason: "not_note_author",
        message: "only the note's author deletes it".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::IssueKey;

    #[test]
    fn the_descriptor_declares_jwt_lifecycle_signed_install_panel_and_webhook() {
        let base = url::Url::parse("https://app.example.com/").unwrap();
        let d = connect_axum::lifecycle::Descriptor::parse(super::DESCRIPTOR, &base).unwrap();
        let json = d.json();
        assert_eq!(json["baseUrl"], "https://app.example.com");
        assert_eq!(json["authentication"]["type"], "jwt");
        assert_eq!(json["apiMigrations"]["signed-install"], true);
        for hook in ["installed", "uninstalled", "enabled", "disabled"] {
            assert_eq!(json["lifecycle"][hook], format!("/{hook}"));
        }
        assert!(!d.key().is_empty());
        assert_eq!(
            json["modules"]["webhooks"][0],
            serde_json::json!({"event": "jira:issue_deleted", "url": "/webhooks/issue-deleted"})
        );
        assert_eq!(
            json["modules"]["jiraIssueContexts"][0]["target"]["url"],
            "/issue-notes?issueKey={issue.key}"
        );
    }

    #[test]
    fn issue_keys_follow_the_jira_pattern() {
        for ok in ["PROJ-1", "AB-123", "A1_B-0", "PR0J-42"] {
            assert!(IssueKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "P-1", "proj-1", "PROJ", "PROJ-", "-1", "1PROJ-1", "PROJ-1a", "PROJ--1",
            "PROJ-1-2", "PRÖJ-1", "PROJ-１", "PROJ 1", "_PROJ-1",
        ] {
            assert!(IssueKey::parse(bad).is_err(), "{bad}");
        }
        assert!(IssueKey::parse(&format!("P{}-1", "A".repeat(300))).is_err());
    }
}
