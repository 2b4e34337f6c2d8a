//! The verified tenant of a request, as handlers receive it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AuthError;
use crate::error::Error;
use crate::store::{ClientKey, TenantRecord};

/// The tenant whose JWT authenticated this request, with the user and context it carried.
///
/// Only [`require_jwt`](super::require_jwt) makes one; a handler on a route without it gets 401.
#[derive(Debug, Clone)]
pub struct Tenant {
    record: Arc<TenantRecord>,
    account_id: Option<String>,
    context: Option<serde_json::Value>,
}

impl Tenant {
    pub(super) fn new(
        record: Arc<TenantRecord>,
        account_id: Option<String>,
        context: Option<serde_json::Value>,
    ) -> Self {
        Self {
            record,
            account_id,
            context,
        }
    }

    /// The tenant's key: pass it to every store call on tenant data.
    pub fn client_key(&self) -> &ClientKey {
        &self.record.installation.client_key
    }

    /// The Atlassian account id of the user (the token's `sub`), when there is one.
    pub fn account_id(&self) -> Option<&str> {
        self.account_id.as_deref()
    }

    /// The token's `context` claim, when there is one.
    pub fn context(&self) -> Option<&serde_json::Value> {
        self.context.as_ref()
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
