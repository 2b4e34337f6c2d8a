//! The verified tenant of a request, as handlers receive it: which site, which user, and what the
//! token may reach.
//!
//! A token handed to a user's view of one issue (a Jira context token, the app's session token, a
//! Forge UI invocation) reaches that issue only, and changes only what its user wrote; a token of
//! the site or of the app itself (a product JWT, an app-level Forge invocation) reaches every issue.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::Value;

use super::AuthError;
use crate::error::Error;
use crate::store::{ClientKey, TenantRecord};

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A product JWT bound to this very request by its qsh: the site calling server to server.
    Product,
    /// A context token (`qsh = context-qsh`) the product gave the user's iframe
    /// (`AP.context.getToken()`).
    Context,
    /// The app's own session token, minted by a page for its iframe and renewed on answers.
    Session,
    /// A Forge Invocation Token from a user's UI invocation (it names a `principal` or a
    /// `context.extension`).
    ForgeUser,
    /// A Forge Invocation Token of the app itself (triggers, functions): no user, no view.
    ForgeApp,
}

impl TokenKind {
    /// Whether the token speaks for one user in one view, and so is limited to what that view
    /// shows and to what that user wrote.
    pub fn is_user_view(self) -> bool {
        matches!(
            self,
            TokenKind::Context | TokenKind::Session | TokenKind::ForgeUser
        )
    }
}

/// A Jira issue as a token's context names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRef {
    /// The issue key, e.g. `PROJ-1`.
    pub key: String,
    /// The issue id, e.g. `10000`, when the token carries it.
    pub id: Option<String>,
}

/// What a request's token may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every issue of the site: product JWTs and app-level Forge invocations.
    Site,
    /// One issue: the one the user's view was opened for.
    Issue(IssueRef),
    /// No issue: a user's token whose context names none. Issue routes refuse it.
    NoIssue,
}

impl Access {
    /// What a token of `kind` with the `context` claim may reach.
    ///
    /// Jira's context tokens and the app's session tokens name an issue as
    /// `{"jira": {"issue": {"key": "PROJ-1", "id": "10000"}}}`; a Forge UI invocation as
    /// `{"extension": {"issue": {"key": "PROJ-1", "id": "10000"}}}`.
    pub fn of(kind: TokenKind, context: Option<&Value>) -> Self {
        let issue = match kind {
            TokenKind::Product | TokenKind::ForgeApp => return Access::Site,
            TokenKind::Context | TokenKind::Session => context.and_then(|c| c.get("jira")),
            TokenKind::ForgeUser => context.and_then(|c| c.get("extension")),
        }
        .and_then(|c| c.get("issue"));
        let key = issue
            .and_then(|i| i.get("key"))
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty());
        match key {
            Some(key) => Access::Issue(IssueRef {
                key: key.to_owned(),
                id: issue.and_then(|i| i.get("id")).and_then(|id| match id {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
            }),
            None => Access::NoIssue,
        }
    }

    /// Whether the issue `key` is within reach.
    pub fn allows(&self, key: &str) -> bool {
        match self {
            Access::Site => true,
            Access::Issue(issue) => issue.key == key,
            Access::NoIssue => false,
        }
    }
}

/// The app's licence on the tenant, as the request's token vouches for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum License {
    /// Licensed: Forge's `app.license.active` (or the deprecated `isActive`), or Connect's
    /// `lic=active` on a request its QSH binds.
    Active {
        /// A trial (`isEvaluation`).
        evaluation: bool,
    },
    /// Not licensed: Forge's `active: false`, Connect's `lic=none`.
    Inactive,
    /// The token says nothing: Forge sends a licence only to paid apps in production (none to
    /// free apps, development and staging), Connect `lic` only on requests to the app's pages
    /// (not on webhooks, REST calls or the iframe's AJAX, whose query the product does not vouch
    /// for).
    Unknown,
}

/// Whose rows a request may change or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Any row of the tenant: the site or the app itself.
    Any,
    /// Only rows this account wrote.
    Account(&'a str),
    /// No row: a user's token that names no user.
    Nobody,
}

/// The tenant whose token authenticated this request, with the user, the context it carried and
/// what it may reach.
///
/// Only [`require_jwt`](super::require_jwt) and [`require_forge`](super::require_forge) make
/// one; a handler on a route without them gets 401.
#[derive(Debug, Clone)]
pub struct Tenant {
    record: Arc<TenantRecord>,
    account_id: Option<String>,
    context: Option<Value>,
    kind: TokenKind,
    access: Access,
    chain_start: Option<u64>,
    license: License,
}

impl Tenant {
    pub(super) fn new(
        record: Arc<TenantRecord>,
        account_id: Option<String>,
        context: Option<Value>,
        kind: TokenKind,
        chain_start: Option<u64>,
    ) -> Self {
        let access = Access::of(kind, context.as_ref());
        Self {
            record,
            account_id,
            context,
            kind,
            access,
            chain_start,
            license: License::Unknown,
        }
    }

    pub(super) fn with_license(self, license: License) -> Self {
        Self { license, ..self }
    }

    /// The app's licence on the tenant, as this request's token says.
    pub fn license(&self) -> License {
        self.license
    }

    /// Refuses with 403 `unlicensed` a request whose token says the app is not licensed; one
    /// whose token says nothing is admitted. For a paid app: Forge always sends its licence in
    /// production, and Connect sends `lic` on its pages (`lic=none` also for free apps, so a
    /// free app does not use this).
    pub fn require_license(&self) -> Result<(), Error> {
        match self.license {
            License::Active { .. } | License::Unknown => Ok(()),
            License::Inactive => Err(Error::Forbidden {
                reason: "unlicensed",
                message: "the app is not licensed on this site".to_owned(),
            }),
        }
    }

    /// The tenant's key: pass it to every store call on tenant data.
    pub fn client_key(&self) -> &ClientKey {
        &self.record.installation.client_key
    }

    /// The Atlassian account id of the user (the token's `sub`, or a FIT's `principal`), when
    /// there is one.
    pub fn account_id(&self) -> Option<&str> {
        self.account_id.as_deref()
    }

    /// The token's `context` claim, when there is one.
    pub fn context(&self) -> Option<&Value> {
        self.context.as_ref()
    }

    /// How the request was authenticated.
    pub fn token_kind(&self) -> TokenKind {
        self.kind
    }

    /// What the token may reach: every issue, one, or none.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Admits a request on the issue `key`, or refuses it with 403: `issue_not_allowed` when the
    /// token names another issue, `issue_not_in_token` when it names none.
    pub fn require_issue(&self, key: &str) -> Result<(), Error> {
        match &self.access {
            access if access.allows(key) => Ok(()),
            Access::NoIssue => Err(Error::Forbidden {
                reason: "issue_not_in_token",
                message: "this token names no issue; issue routes need one".to_owned(),
            }),
            _ => Err(Error::Forbidden {
                reason: "issue_not_allowed",
                message: "this token was issued for another issue".to_owned(),
            }),
        }
    }

    /// Whose rows the request may change or delete: a user's view only what its user wrote.
    pub fn may_change(&self) -> Owner<'_> {
        if !self.kind.is_user_view() {
            return Owner::Any;
        }
        match self.account_id() {
            Some(account) => Owner::Account(account),
            None => Owner::Nobody,
        }
    }

    /// When the chain of context and session tokens this one belongs to began (Unix seconds):
    /// a session token's `auth_time`, a context token's `iat`. `None` for other tokens.
    pub fn chain_start(&self) -> Option<u64> {
        self.chain_start
    }

    /// The stored installation.
    pub fn record(&self) -> &TenantRecord {
        &self.record
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Tenant>().cloned().ok_or_else(|| {
            tracing::error!(
                path = parts.uri.path(),
                "Tenant taken on a route without require_jwt"
            );
            AuthError::MissingToken.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn issue(key: &str, id: Option<&str>) -> Access {
        Access::Issue(IssueRef {
            key: key.to_owned(),
            id: id.map(str::to_owned),
        })
    }

    #[test]
    fn a_jira_context_names_its_issue_for_context_and_session_tokens() {
        // The shape of Atlassian's documented context JWT for an issue module.
        let context = json!({ "jira": {
            "issue": { "issuetype": { "id": "10002" }, "key": "NOTES-1", "id": "10000" },
            "project": { "key": "NOTES", "id": "10000" } } });
        for kind in [TokenKind::Context, TokenKind::Session] {
            assert_eq!(
                Access::of(kind, Some(&context)),
                issue("NOTES-1", Some("10000"))
            );
        }
        assert_eq!(
            Access::of(TokenKind::ForgeUser, Some(&context)),
            Access::NoIssue
        );
    }

    #[test]
    fn a_forge_ui_context_names_its_issue_in_the_extension() {
        let context = json!({ "cloudId": "c", "extension": {
            "type": "jira:issuePanel", "issue": { "key": "PROJ-7", "id": 10007 } } });
        assert_eq!(
            Access::of(TokenKind::ForgeUser, Some(&context)),
            issue("PROJ-7", Some("10007"))
        );
    }

    #[test]
    fn user_tokens_without_an_issue_reach_none_and_site_tokens_all() {
        for context in [
            None,
            Some(json!({})),
            Some(json!({ "jira": { "project": { "key": "P" } } })),
            Some(json!({ "jira": { "issue": { "id": "1" } } })),
            Some(json!({ "jira": { "issue": { "key": "" } } })),
            Some(json!({ "jira": { "issue": { "key": 5 } } })),
        ] {
            assert_eq!(
                Access::of(TokenKind::Context, context.as_ref()),
                Access::NoIssue,
                "{context:?}"
            );
        }
        let context = json!({ "jira": { "issue": { "key": "PROJ-1" } } });
        for kind in [TokenKind::Product, TokenKind::ForgeApp] {
            assert_eq!(Access::of(kind, Some(&context)), Access::Site);
            assert_eq!(Access::of(kind, None), Access::Site);
        }
    }

    #[test]
    fn access_allows_its_issue_only() {
        assert!(Access::Site.allows("ANY-1"));
        assert!(issue("PROJ-1", None).allows("PROJ-1"));
        assert!(!issue("PROJ-1", None).allows("PROJ-10"));
        assert!(!issue("PROJ-1", None).allows("proj-1"));
        assert!(!Access::NoIssue.allows("PROJ-1"));
    }
}
