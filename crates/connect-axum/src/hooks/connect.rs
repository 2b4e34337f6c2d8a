//! The lifecycle hooks through which sites install, uninstall, enable and disable the app, and
//! the descriptor's route.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use url::{Host, Url};

use crate::auth::{AuthError, SignedInstall, Tenant};
use crate::config::HostPatterns;
pub use crate::descriptor::{Descriptor, DescriptorError};
use crate::error::{Error, JsonBody, Result};
use crate::state::AppState;
use crate::store::{
    ClientKey, Installation, LifecycleToken, SaveOutcome, SharedSecret, StoreError,
};

/// `GET /atlassian-connect.json`: public.
pub fn descriptor_router() -> Router<AppState> {
    Router::new().route("/atlassian-connect.json", get(descriptor))
}

/// `installed` and `uninstalled`: each handler verifies the signed install itself.
pub fn signed_install_router() -> Router<AppState> {
    Router::new()
        .route("/installed", post(installed))
        .route("/uninstalled", post(uninstalled))
}

/// `enabled` and `disabled`: to be layered with [`LifecycleJwt`](crate::auth::LifecycleJwt).
pub fn hooks_router() -> Router<AppState> {
    Router::new()
        .route("/enabled", post(enabled))
        .route("/disabled", post(disabled))
}

async fn descriptor(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(app.descriptor.json().clone())
}

/// The body of every lifecycle hook.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LifecyclePayload {
    key: String,
    client_key: String,
    #[serde(default)]
    shared_secret: Option<String>,
    base_url: String,
    #[serde(default)]
    display_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    product_type: Option<String>,
    #[serde(default, deserialize_with = "text")]
    description: Option<String>,
    #[serde(default, deserialize_with = "text")]
    server_version: Option<String>,
    #[serde(default, deserialize_with = "text")]
    plugins_version: Option<String>,
    #[serde(default, deserialize_with = "text")]
    oauth_client_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    service_entitlement_number: Option<String>,
    #[serde(default, deserialize_with = "text")]
    cloud_id: Option<String>,
    #[serde(default, deserialize_with = "text")]
    installation_id: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
}

/// An optional informational field: a string, or a number kept as its text.
fn text<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

const MAX_FIELD_LEN: usize = 1024;
const MAX_TEXT_LEN: usize = 64 * 1024;

impl LifecyclePayload {
    fn parse(body: &[u8]) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            Error::bad_request("invalid_json", format!("the body is not JSON: {e}"))
        })?;
        serde_json::from_value(value).map_err(|e| {
            Error::bad_request("invalid_payload", format!("invalid lifecycle payload: {e}"))
        })
    }

    /// Checks what every hook needs: the event, this app's key, a plausible clientKey.
    fn check(&self, app_key: &str, event: &str) -> Result<()> {
        if self.event_type.as_deref().is_some_and(|e| e != event) {
            return Err(Error::bad_request(
                "invalid_payload",
                format!("eventType must be {event:?} on this hook"),
            ));
        }
        if self.key != app_key {
            return Err(Error::bad_request(
                "wrong_app_key",
                "key is not this app's key",
            ));
        }
        if !crate::auth::is_plausible_client_key(&self.client_key) {
            return Err(Error::bad_request(
                "invalid_payload",
                "clientKey must be 1 to 255 characters without NUL",
            ));
        }
        // Postgres text cannot hold NUL; every store refuses it alike.
        let short = [&self.base_url, &self.key]
            .into_iter()
            .chain(self.shared_secret.iter())
            .chain(self.display_url.iter())
            .map(|s| (s, MAX_FIELD_LEN));
        let long = [
            &self.product_type,
            &self.description,
            &self.server_version,
            &self.plugins_version,
            &self.oauth_client_id,
            &self.service_entitlement_number,
            &self.cloud_id,
            &self.installation_id,
        ]
        .into_iter()
        .flatten()
        .map(|s| (s, MAX_TEXT_LEN));
        if short
            .chain(long)
            .any(|(s, max)| s.len() > max || s.contains('\0'))
        {
            return Err(Error::bad_request(
                "invalid_payload",
                "a field is too long or contains NUL",
            ));
        }
        Ok(())
    }

    /// The tenant an `installed` payload describes, once its baseUrl and displayUrl are allowed.
    fn into_tenant(self, app_key: &str, allowed: &HostPatterns) -> Result<Installation> {
        self.check(app_key, "installed")?;
        let shared_secret = self
            .shared_secret
            .filter(|s| !s.is_empty() && s.len() <= MAX_FIELD_LEN)
            .ok_or_else(|| Error::bad_request("invalid_payload", "sharedSecret is required"))?;
        check_site_url(allowed, &BASE_URL, &self.base_url)?;
        // The page's Content-Security-Policy names this origin: it must be a site, like baseUrl.
        let display_url = self.display_url.filter(|u| !u.is_empty());
        if let Some(display_url) = &display_url {
            check_site_url(allowed, &DISPLAY_URL, display_url)?;
        }
        Ok(Installation {
            client_key: ClientKey::new(self.client_key),
            app_key: self.key,
            shared_secret: SharedSecret::new(shared_secret),
            base_url: self.base_url.trim_end_matches('/').to_owned(),
            display_url,
            product_type: self.product_type,
            description: self.description,
            server_version: self.server_version,
            plugins_version: self.plugins_version,
            oauth_client_id: self.oauth_client_id,
            service_entitlement_number: self.service_entitlement_number,
            cloud_id: self.cloud_id,
            installation_id: self.installation_id,
        })
    }
}

/// A site URL of the `installed` payload, with the reason codes of its refusals.
struct SiteUrlField {
    name: &'static str,
    invalid: &'static str,
    not_allowed: &'static str,
}

const BASE_URL: SiteUrlField = SiteUrlField {
    name: "baseUrl",
    invalid: "invalid_base_url",
    not_allowed: "base_url_not_allowed",
};

const DISPLAY_URL: SiteUrlField = SiteUrlField {
    name: "displayUrl",
    invalid: "invalid_display_url",
    not_allowed: "display_url_not_allowed",
};

/// A site URL must be a [`site_origin`] on an allowed host, without query or fragment.
fn check_site_url(allowed: &HostPatterns, field: &SiteUrlField, value: &str) -> Result<()> {
    let name = field.name;
    let url = Url::parse(value)
        .map_err(|_| Error::bad_request(field.invalid, format!("{name} is not a URL")))?;
    if site_origin(&url).is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(Error::bad_request(
            field.invalid,
            format!(
                "{name} must be an https URL on a plain host name, without credentials, query or \
                 fragment"
            ),
        ));
    }
    if !url.host_str().is_some_and(|host| allowed.matches(host)) {
        return Err(Error::Forbidden {
            reason: field.not_allowed,
            message: format!("installs with this {name} are not allowed (ALLOWED_BASE_URLS)"),
        });
    }
    Ok(())
}

/// The origin of a tenant's site, as its pages' Content-Security-Policy may name it: https (plain
/// http only on loopback, for local tests), without credentials, on an IP address or a host name
/// of letters, digits, `-` and `.` only; `None` for anything else.
///
/// The URL parser lets `;`, `'`, `*` and more through in a host name, each of them CSP syntax.
pub fn site_origin(url: &Url) -> Option<String> {
    let loopback = match url.host()? {
        Host::Domain(d) => {
            let plain = d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
            if d.is_empty() || !plain {
                return None;
            }
            d == "localhost"
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    (scheme_ok && url.username().is_empty() && url.password().is_none())
        .then(|| url.origin().ascii_serialization())
}

async fn installed(State(app): State<AppState>, signed: SignedInstall) -> Result<StatusCode> {
    let payload = LifecyclePayload::parse(&signed.body)?;
    signed.check_issuer(&payload.client_key)?;
    let tenant =
        payload.into_tenant(app.descriptor.key(), &app.config.connect.allowed_base_urls)?;
    let key = &tenant.client_key;
    // A verified install replaces a stored secret that no longer opens.
    let previous = match app.store.tenants().find(key.as_str()).await {
        Err(StoreError::UnreadableSecret(_)) => None,
        found => found?,
    };
    match app.store.tenants().save(&tenant, &signed.token).await? {
        SaveOutcome::Saved => {}
        SaveOutcome::Stale
            if previous
                .as_ref()
                .is_some_and(|t| t.origin == crate::store::Origin::Forge) =>
        {
            // A Forge-born tenant is keyed by its installationId: no Connect install takes it.
            tracing::warn!(
                tenant.client_key = %key,
                "refused a Connect install naming the key of a Forge-born tenant"
            );
            return Err(Error::Conflict {
                reason: "client_key_taken",
                message: "a tenant born of a Forge install holds this key".to_owned(),
            });
        }
        SaveOutcome::Stale => {
            // A retry of the very install already applied changes nothing; any other token no
            // newer than the stored one is a replay or an older install, and must not win.
            let current = crate::auth::usable(app.store.tenants().find(key.as_str()).await)?;
            if current.is_some_and(|t| t.is_installed() && same_install(&t.installation, &tenant)) {
                return Ok(StatusCode::NO_CONTENT);
            }
            tracing::warn!(tenant.client_key = %key, "refused a replayed or older install of {key}");
            return Err(stale_token("install"));
        }
        SaveOutcome::InstallationIdTaken => {
            // The payload is not covered by the signed install: an id another installed tenant
            // holds could come from a relayed or imported install, and would take over its
            // Forge invocations.
            tracing::warn!(
                tenant.client_key = %key,
                "refused the install of {key}: another installed tenant holds its installationId"
            );
            return Err(Error::Conflict {
                reason: "installation_id_taken",
                message: "another installed tenant holds this installationId".to_owned(),
            });
        }
    }
    if let Some(previous) = previous.filter(|p| p.installation.base_url != tenant.base_url) {
        tracing::warn!(
            tenant.client_key = %key,
            tenant.base_url = %tenant.base_url,
            "tenant {key} moved from {} to {} (signed install verified)",
            previous.installation.base_url,
            tenant.base_url
        );
    }
    metrics::counter!("lifecycle_events_total", "event" => "installed").increment(1);
    tracing::info!(
        tenant.client_key = %key,
        tenant.base_url = %tenant.base_url,
        "installed tenant {key}"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Whether two installs carry the same secret and site (the secret compared in constant time).
fn same_install(a: &Installation, b: &Installation) -> bool {
    use subtle::ConstantTimeEq as _;
    let secrets = a
        .shared_secret
        .expose()
        .as_bytes()
        .ct_eq(b.shared_secret.expose().as_bytes());
    bool::from(secrets) && a.base_url == b.base_url && a.app_key == b.app_key
}

fn stale_token(hook: &str) -> Error {
    Error::Conflict {
        reason: "stale_lifecycle_token",
        message: format!(
            "this {hook} is not newer than the lifecycle event already applied to the tenant"
        ),
    }
}

async fn uninstalled(State(app): State<AppState>, signed: SignedInstall) -> Result<StatusCode> {
    let payload = LifecyclePayload::parse(&signed.body)?;
    signed.check_issuer(&payload.client_key)?;
    payload.check(app.descriptor.key(), "uninstalled")?;
    let key = ClientKey::new(payload.client_key);
    if !app
        .store
        .tenants()
        .mark_uninstalled(&key, &signed.token)
        .await?
    {
        // Unknown, or uninstalled already: nothing to do. Installed by a newer token: refused.
        if crate::auth::usable(app.store.tenants().find(key.as_str()).await)?
            .is_some_and(|t| t.is_installed())
        {
            tracing::warn!(tenant.client_key = %key, "refused a replayed or older uninstall of {key}");
            return Err(stale_token("uninstall"));
        }
        tracing::info!(tenant.client_key = %key, "uninstall of {key}: nothing installed");
        return Ok(StatusCode::NO_CONTENT);
    }
    metrics::counter!("lifecycle_events_total", "event" => "uninstalled").increment(1);
    tracing::info!(
        tenant.client_key = %key,
        "uninstalled tenant {key}; its data is kept for {} days",
        app.config.compliance.uninstall_retention.as_secs_f64() / 86_400.0
    );
    Ok(StatusCode::NO_CONTENT)
}

async fn enabled(
    State(app): State<AppState>,
    tenant: Tenant,
    Extension(token): Extension<LifecycleToken>,
    JsonBody(payload): JsonBody<serde_json::Value>,
) -> Result<StatusCode> {
    switch(app, tenant, token, payload, true).await
}

async fn disabled(
    State(app): State<AppState>,
    tenant: Tenant,
    Extension(token): Extension<LifecycleToken>,
    JsonBody(payload): JsonBody<serde_json::Value>,
) -> Result<StatusCode> {
    switch(app, tenant, token, payload, false).await
}

/// Applies `enabled`/`disabled` under the rule of the signed hooks: a token applied before, or
/// older than the last lifecycle event applied, changes nothing. Such a token is answered 204
/// when the tenant is already in the state it asks for (a redelivery), 409 otherwise.
async fn switch(
    app: AppState,
    tenant: Tenant,
    token: LifecycleToken,
    payload: serde_json::Value,
    enabled: bool,
) -> Result<StatusCode> {
    let event = if enabled { "enabled" } else { "disabled" };
    let payload: LifecyclePayload = serde_json::from_value(payload).map_err(|e| {
        Error::bad_request("invalid_payload", format!("invalid lifecycle payload: {e}"))
    })?;
    if payload.client_key != tenant.client_key().as_str() {
        return Err(AuthError::IssuerMismatch.into());
    }
    payload.check(app.descriptor.key(), event)?;
    let key = tenant.client_key();
    if !app
        .store
        .tenants()
        .set_enabled(key, enabled, &token)
        .await?
    {
        let current = app.store.tenants().find(key.as_str()).await?;
        if current.is_some_and(|t| t.enabled == enabled) {
            tracing::info!(tenant.client_key = %key, "{event} of {key}: already {event}");
            return Ok(StatusCode::NO_CONTENT);
        }
        tracing::warn!(tenant.client_key = %key, "refused a replayed or older {event} of {key}");
        return Err(stale_token(event));
    }
    metrics::counter!("lifecycle_events_total", "event" => event).increment(1);
    tracing::info!(tenant.client_key = %tenant.client_key(), "{event} tenant {}", tenant.client_key());
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the `installed` hook's payload parsing and checks (app key, clientKey, field limits,
/// sharedSecret, baseUrl and displayUrl rules) on a raw body, without a signature or a store; for fuzzing.
#[doc(hidden)]
pub fn parse_installed_payload(
    body: &[u8],
    app_key: &str,
    allowed: &HostPatterns,
) -> Result<Installation> {
    LifecyclePayload::parse(body)?.into_tenant(app_key, allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(base_url: &str) -> Result<Installation> {
        install_with(serde_json::json!({ "baseUrl": base_url }))
    }

    fn install_with(fields: serde_json::Value) -> Result<Installation> {
        let mut body = serde_json::json!({
            "key": "app", "clientKey": "k", "sharedSecret": "s", "baseUrl": "https://site.atlassian.net",
        });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let allowed = HostPatterns::parse("*.atlassian.net, docs.acme.com").unwrap();
        parse_installed_payload(body.to_string().as_bytes(), "app", &allowed)
    }

    fn refusal(result: Result<Installation>) -> Option<&'static str> {
        match result {
            Err(Error::BadRequest { reason, .. } | Error::Forbidden { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_display_url_must_be_a_site_like_the_base_url() {
        for ok in [
            "https://site.atlassian.net",
            "https://docs.acme.com/wiki",
            "https://DOCS.acme.com:8443",
        ] {
            let installation = install_with(serde_json::json!({ "displayUrl": ok })).unwrap();
            assert_eq!(installation.display_url.as_deref(), Some(ok));
        }
        for absent in [serde_json::Value::Null, serde_json::json!("")] {
            let installation = install_with(serde_json::json!({ "displayUrl": absent })).unwrap();
            assert_eq!(installation.display_url, None);
        }
        for (url, reason) in [
            ("https://evil.example", "display_url_not_allowed"),
            (
                "https://docs.acme.com.evil.example",
                "display_url_not_allowed",
            ),
            (
                "https://x.atlassian.net;script-src *",
                "invalid_display_url",
            ),
            ("https://x.atlassian.net;script-src", "invalid_display_url"),
            ("https://evil;x.atlassian.net", "invalid_display_url"),
            ("https://x'y.atlassian.net", "invalid_display_url"),
            ("https://x%3By.atlassian.net", "invalid_display_url"),
            ("http://site.atlassian.net", "invalid_display_url"),
            ("https://u:p@site.atlassian.net", "invalid_display_url"),
            ("https://site.atlassian.net/?q", "invalid_display_url"),
            ("https://site.atlassian.net/#f", "invalid_display_url"),
            ("javascript:alert(1)", "invalid_display_url"),
            ("not a url", "invalid_display_url"),
        ] {
            assert_eq!(
                refusal(install_with(serde_json::json!({ "displayUrl": url }))),
                Some(reason),
                "{url}"
            );
        }
    }

    #[test]
    fn a_base_url_whose_host_carries_csp_syntax_is_refused() {
        for url in ["https://evil;x.atlassian.net", "https://a*b.atlassian.net"] {
            assert_eq!(refusal(install(url)), Some("invalid_base_url"), "{url}");
        }
    }

    #[test]
    fn a_site_origin_is_https_or_loopback_http_on_a_plain_host() {
        let origin = |u: &str| site_origin(&Url::parse(u).unwrap());
        assert_eq!(
            origin("https://Acme.atlassian.net/wiki?x#y").as_deref(),
            Some("https://acme.atlassian.net")
        );
        assert_eq!(
            origin("http://localhost:8080/").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            origin("http://127.0.0.1").as_deref(),
            Some("http://127.0.0.1")
        );
        assert_eq!(
            origin("https://[::1]:3000").as_deref(),
            Some("https://[::1]:3000")
        );
        for bad in [
            "http://acme.atlassian.net",
            "https://a;b.example",
            "https://a,b.example",
            "https://user@acme.atlassian.net",
            "data:text/html,x",
            "file:///etc/passwd",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn base_url_with_credentials_even_a_bare_password_is_refused() {
        assert!(install("https://site.atlassian.net/").is_ok());
        for url in [
            "https://:pw@site.atlassian.net",
            "https://user@site.atlassian.net",
        ] {
            assert!(
                matches!(
                    install(url),
                    Err(Error::BadRequest {
                        reason: "invalid_base_url",
                        ..
                    })
                ),
                "{url}"
            );
        }
    }
}
