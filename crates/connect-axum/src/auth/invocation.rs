//! The Forge invocation a route serves, whichever Forge door it came by: a remote's (a Forge
//! Invocation Token) or a container's (Forge's sidecar). A handler that calls the product or
//! Forge storage through it runs unchanged as a remote and as a container.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AuthError;
use super::container::ContainerInvocation;
use super::forge::ForgeInvocation;
use crate::error::Error;
use crate::forge::storage::{ForgeStorage, Storage};
use crate::product::{Caller, ProductClient, ProductError};

/// The invocation of a request on a Forge route (`.forge_routes`).
#[derive(Debug, Clone)]
pub enum Invocation {
    /// Forge invoked the app's remote with a Forge Invocation Token.
    Remote(ForgeInvocation),
    /// Forge's sidecar forwarded the invocation to the app's container.
    Container(ContainerInvocation),
}

impl Invocation {
    /// The installation the invocation runs in: the tenant's key.
    pub fn installation_id(&self) -> &str {
        match self {
            Self::Remote(invocation) => &invocation.installation_id,
            Self::Container(invocation) => &invocation.context.app.installation_id,
        }
    }

    /// Calls the product as the app: with the invocation's system token from a remote, through
    /// the egress proxy from a container.
    ///
    /// # Errors
    /// As [`ProductClient::as_forge_app`] and [`ProductClient::as_container_app`].
    pub fn product_as_app<'a>(
        &'a self,
        product: &'a ProductClient,
    ) -> Result<Caller<'a>, ProductError> {
        match self {
            Self::Remote(invocation) => product.as_forge_app(invocation),
            Self::Container(invocation) => product.as_container_app(invocation),
        }
    }

    /// Calls the product as the invoking user.
    ///
    /// # Errors
    /// [`ProductError::NoForgeUserToken`] for an invocation without a user (or, from a remote,
    /// without its user token).
    pub fn product_as_user<'a>(
        &'a self,
        product: &'a ProductClient,
    ) -> Result<Caller<'a>, ProductError> {
        match self {
            Self::Remote(invocation) => product.as_forge_user(invocation),
            Self::Container(invocation) => product.as_container_user(invocation),
        }
    }

    /// The installation's Forge storage; `None` for a remote invocation that carried no system
    /// token (the manifest's endpoint lacks `auth.appSystemToken`).
    pub fn storage<'a>(&'a self, storage: &'a ForgeStorage) -> Option<Storage<'a>> {
        match self {
            Self::Remote(invocation) => invocation
                .system_token
                .as_ref()
                .map(|token| storage.for_installation(token)),
            Self::Container(invocation) => Some(storage.in_container(invocation)),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Invocation {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(invocation) = parts.extensions.get::<ContainerInvocation>() {
            return Ok(Self::Container(invocation.clone()));
        }
        parts
            .extensions
            .get::<ForgeInvocation>()
            .cloned()
            .map(Self::Remote)
            .ok_or_else(|| AuthError::MissingToken.into())
    }
}
