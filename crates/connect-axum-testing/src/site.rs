//! A fake Atlassian site: the install-key server, lifecycle payloads, signed installs, and the
//! product, context and session-style tokens a site signs with a tenant's sharedSecret.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use connect_axum::protocol::qsh;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The key id the key server publishes the install key under.
pub const KID: &str = "test-kid-1";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// The key pair Atlassian signs installs with, made once per test process.
pub struct InstallKey {
    /// The 2048-bit RSA private key, PKCS#8 PEM: signs the test's installs.
    pub private_pem: String,
    /// Its public key, SPKI PEM, as the key server publishes it.
    pub public_pem: String,
}

/// The process's install key.
pub fn install_key() -> &'static InstallKey {
    static KEY: OnceLock<InstallKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).expect("an RSA key");
        InstallKey {
            private_pem: private
                .to_pkcs8_pem(LineEnding::LF)
                .expect("PKCS#8 PEM")
                .to_string(),
            public_pem: private
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("SPKI PEM"),
        }
    })
}

/// The install-key server (`INSTALL_KEYS_URL`) on loopback, publishing the install key under
/// [`KID`] and counting fetches.
pub struct KeyServer {
    /// The server's base URL, `http://127.0.0.1:<port>`: the app's `INSTALL_KEYS_URL`.
    pub url: String,
    /// Key fetches so far, any kid; read with [`KeyServer::hits`].
    pub hits: Arc<AtomicUsize>,
}

impl KeyServer {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .route("/{kid}", get(serve_key))
            .with_state(hits.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, hits }
    }

    /// How many keys were fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve_key(
    State(hits): State<Arc<AtomicUsize>>,
    Path(kid): Path<String>,
) -> Result<String, StatusCode> {
    hits.fetch_add(1, Ordering::SeqCst);
    if kid == KID {
        Ok(install_key().public_pem.clone())
    } else {
        Err(StatusCode::NOT_FOUND)
    }
}

/// A site installing the app whose key is `app_key`, served at `app_base_url`.
#[derive(Clone, Debug)]
pub struct Site {
    /// The app key installs and tokens name (the descriptor's `key`).
    pub app_key: String,
    /// The app's `BASE_URL` without a trailing `/`: the audience of signed installs.
    pub app_base_url: String,
}

/// A tenant as its site knows it.
#[derive(Clone, Debug)]
pub struct TestTenant {
    /// The tenant's clientKey, `{name}-client-key`.
    pub client_key: String,
    /// The sharedSecret its install gives the app; it signs the tenant's JWTs.
    pub secret: String,
    /// The site's base URL, `https://{name}.atlassian.net`.
    pub base_url: String,
    /// The site that installs the app for this tenant.
    pub site: Site,
}

impl Site {
    /// The site of `name` (`https://{name}.atlassian.net`), with a fresh sharedSecret.
    pub fn tenant(&self, name: &str) -> TestTenant {
        TestTenant {
            client_key: format!("{name}-client-key"),
            secret: format!("{name}-secret-{}", rand08::random::<u64>()),
            base_url: format!("https://{name}.atlassian.net"),
            site: self.clone(),
        }
    }
}

impl TestTenant {
    /// The cloud id of this site.
    pub fn cloud_id(&self) -> String {
        format!("cloud-{}", self.client_key)
    }

    /// The Forge installation id this site's installs carry.
    pub fn installation_id(&self) -> String {
        format!("ari:cloud:ecosystem::installation/{}", self.client_key)
    }

    /// The lifecycle payload this site sends for `event`.
    pub fn payload(&self, event: &str) -> Value {
        json!({
            "key": self.site.app_key,
            "clientKey": self.client_key,
            "sharedSecret": self.secret,
            "baseUrl": self.base_url,
            "displayUrl": self.base_url,
            "productType": "jira",
            "description": "Atlassian JIRA at https://example.atlassian.net",
            "serviceEntitlementNumber": "SEN-1234",
            "serverVersion": "100217",
            "pluginsVersion": "1001.0.0-SNAPSHOT",
            "oauthClientId": "oauth-client",
            "eventType": event,
            "cloudId": self.cloud_id(),
            "installationId": self.installation_id()
        })
    }

    /// An HS256 token as the product signs it, bound to `method` and `target`.
    pub fn token(&self, method: &str, target: &str) -> String {
        self.token_with(json!({ "qsh": qsh_of(method, target) }))
    }

    /// A context token as the issue view of `issue_key` gets it from `AP.context.getToken()`.
    pub fn context_token(&self, issue_key: &str) -> String {
        self.token_with(json!({
            "qsh": "context-qsh",
            "context": { "jira": { "issue": { "key": issue_key, "id": "10000" } } },
        }))
    }

    /// An HS256 token with default claims (`iss`, `iat`, `exp` in 3 minutes, a `sub`)
    /// overridden by `extra`.
    pub fn token_with(&self, extra: Value) -> String {
        let claims = json!({
            "iss": self.client_key,
            "iat": now(),
            "exp": now() + 180,
            "sub": "557058:account-id",
        });
        hs256(&with_overrides(claims, extra), &self.secret)
    }

    /// A signed-install token (RS256, [`KID`]) for the hook at `path`, with default claims
    /// overridden by `extra`; each has a `jti` of its own.
    pub fn install_token(&self, path: &str, extra: Value) -> String {
        let claims = json!({
            "jti": format!("{:032x}", rand08::random::<u128>()),
            "iss": self.client_key,
            "aud": self.site.app_base_url,
            "iat": now(),
            "exp": now() + 180,
            "qsh": qsh_of("POST", path),
        });
        rs256(&with_overrides(claims, extra), KID)
    }
}

/// `claims` signed HS256 with `secret`.
pub fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("claims encode")
}

/// `claims` signed RS256 with the install key, under key id `kid`.
pub fn rs256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(install_key().private_pem.as_bytes()).expect("a PEM key");
    jsonwebtoken::encode(&header, claims, &key).expect("claims encode")
}

/// The QSH of `target` (`/path?query`) relative to the app.
pub fn qsh_of(method: &str, target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    qsh::qsh(method, path, query, "")
}

/// `claims` with each claim of `extra` set, or removed where `extra` has it as null.
pub fn with_overrides(mut claims: Value, extra: Value) -> Value {
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                claims.remove(k);
            } else {
                claims.insert(k.clone(), v.clone());
            }
        }
    }
    claims
}
