//! The check of a Forge Invocation Token: its keys, signature, issuer, audience, time claims and
//! installation, and the tenant it resolves.

use std::sync::Arc;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, Validation};

use super::claims::InvocationClaims;
use super::{
    FIT_ISSUER, ForgeInvocation, ForgeToken, SYSTEM_TOKEN_HEADER, USER_TOKEN_HEADER, bearer,
    header_token, refused,
};
use crate::auth::{AuthError, Authenticator, Tenant, TokenKind, jwt};
use crate::error::Error;
use crate::store::{LifecycleToken, TenantRecord};

/// A verified Forge Invocation Token.
#[derive(Debug, Clone)]
pub struct VerifiedFit {
    /// The token's claims, verified.
    pub claims: Arc<InvocationClaims>,
    /// Orders and deduplicates the lifecycle changes the token makes.
    pub lifecycle: LifecycleToken,
    /// The app's system token from the `x-forge-oauth-system` header, which the FIT does not
    /// cover; `None` when the call carries none (`appSystemToken` unset in the manifest).
    pub system_token: Option<ForgeToken>,
}

impl VerifiedFit {
    /// The installation the token describes, for the store.
    pub fn installation(&self) -> crate::store::ForgeInstallation {
        let claims = &self.claims;
        crate::store::ForgeInstallation {
            installation_id: claims.app.installation_id.clone(),
            app_id: claims.app.id.clone().unwrap_or_default(),
            app_version: claims.app.app_version.clone(),
            cloud_id: claims.cloud_id(),
            product: claims.product().map(str::to_owned),
            api_base_url: claims.app.api_base_url.clone(),
            site_url: claims.site_url().map(str::to_owned),
            create_if_new: true,
        }
    }
}

impl Authenticator {
    /// Verifies a Forge Invocation Token: every failure here is a 401, which Forge reads as "the
    /// FIT was rejected".
    pub async fn verify_fit(&self, headers: &HeaderMap) -> Result<VerifiedFit, Error> {
        let Some(forge) = &self.inner.forge else {
            return Err(AuthError::ForgeNotConfigured.into());
        };
        let token = bearer(headers)?;
        let (header, _) = jwt::peek(token)?;
        if header.alg != "RS256" {
            return Err(AuthError::UnsupportedAlgorithm.into());
        }
        let kid = header.kid.ok_or(AuthError::InvalidKeyId)?;
        if kid.is_empty() || kid.len() > 256 {
            return Err(AuthError::InvalidKeyId.into());
        }
        let key = forge.keys_for(token)?.get(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.leeway = self.inner.limits.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[FIT_ISSUER]);
        validation.set_audience(&[&forge.app_ari]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<InvocationClaims>(token, &key, &validation)
            .map_err(|e| jwt::reason(&e))?
            .claims;
        let exp = claims.exp.ok_or(AuthError::MissingClaim)?;
        let now = jsonwebtoken::get_current_timestamp() as i64;
        jwt::check_issued(claims.iat, now, self.inner.limits)?;
        jwt::check_lifetime(exp, claims.iat, now, self.inner.limits)?;
        if !crate::auth::is_plausible_client_key(&claims.app.installation_id)
            || claims
                .principal
                .as_deref()
                .is_some_and(|p| !crate::auth::fits_id_column(p))
        {
            return Err(AuthError::MalformedToken.into());
        }
        // A FIT without `iat` is ordered by its `exp`.
        let lifecycle = crate::auth::lifecycle_token(
            Some(claims.iat.unwrap_or(exp)),
            Some(exp),
            claims.jti.as_deref(),
            token,
        )?;
        let system_token = header_token(headers, SYSTEM_TOKEN_HEADER);
        Ok(VerifiedFit {
            claims: Arc::new(claims),
            lifecycle,
            system_token,
        })
    }

    /// The installed tenant of a verified invocation: the one holding its installationId, else
    /// the one installed tenant of the invoked product on the site its cloud id names (Jira and
    /// Confluence of one site share it), counting only cloud ids that verified tokens gave (a
    /// cloud id in a Connect install body is the installer's claim and leads nowhere).
    pub async fn forge_tenant(&self, fit: &VerifiedFit) -> Result<Arc<TenantRecord>, Error> {
        let claims = &fit.claims;
        let record = match crate::auth::usable(
            self.inner
                .store
                .tenants()
                .find_by_installation_id(&claims.app.installation_id)
                .await,
        )
        .map_err(refused)?
        {
            Some(record) => record,
            None => match claims.cloud_id() {
                Some(cloud_id) => {
                    let mut found = crate::auth::usable(
                        self.inner
                            .store
                            .tenants()
                            .find_installed_by_cloud_id(&cloud_id, claims.product())
                            .await,
                    )
                    .map_err(refused)?;
                    match (found.pop(), found.is_empty()) {
                        (Some(record), true) => record,
                        _ => return Err(self.unmapped(claims).await),
                    }
                }
                None => return Err(self.unmapped(claims).await),
            },
        };
        if !record.is_installed() {
            return Err(refused(AuthError::TenantUninstalled.into()));
        }
        if !record.enabled {
            return Err(refused(AuthError::TenantDisabled.into()));
        }
        Ok(record)
    }

    /// The refusal of an invocation no installed tenant takes: a Forge-born tenant (keyed by the
    /// installationId) that has uninstalled is said to be; any other is unmapped.
    async fn unmapped(&self, claims: &InvocationClaims) -> Error {
        let id = &claims.app.installation_id;
        match self.inner.store.tenants().find(id).await {
            Ok(Some(record))
                if record.origin == crate::store::Origin::Forge && !record.is_installed() =>
            {
                refused(AuthError::TenantUninstalled.into())
            }
            _ => refused(AuthError::UnmappedInstallation.into()),
        }
    }

    /// Verifies a Forge Invocation Token and resolves its tenant.
    pub(super) async fn authenticate_forge(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Tenant, ForgeInvocation), Error> {
        let fit = self.verify_fit(headers).await?;
        let record = self.forge_tenant(&fit).await?;
        let app = fit.claims.is_app_invocation();
        // The header is not covered by the FIT: a user's call may carry any value in it.
        if app && let Some(token) = &fit.system_token {
            self.inner
                .system_tokens
                .remember(&record.installation.client_key, token, &fit.claims)
                .await;
        }
        let user_token = header_token(headers, USER_TOKEN_HEADER);
        let claims = fit.claims;
        let kind = if app {
            TokenKind::ForgeApp
        } else {
            TokenKind::ForgeUser
        };
        let invocation = ForgeInvocation {
            installation_id: claims.app.installation_id.clone(),
            api_base_url: claims.app.api_base_url.clone(),
            principal: claims.principal.clone(),
            system_token: fit.system_token,
            user_token,
            claims: claims.clone(),
        };
        Ok((
            Tenant::new(
                record,
                claims.principal.clone(),
                claims.context.clone(),
                kind,
                None,
            )
            .with_license(claims.tenant_license()),
            invocation,
        ))
    }
}
