//! JWT decoding and verification: the unverified peek that finds the signer, and the verified
//! decode that checks signature, algorithm and time claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::AuthError;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The header fields read before verification.
#[derive(Debug, Deserialize)]
pub struct PeekedHeader {
    pub alg: String,
    pub kid: Option<String>,
}

/// The claims read before verification, only to find who signed the token.
#[derive(Debug, Deserialize)]
pub struct PeekedClaims {
    pub iss: Option<String>,
    pub aud: Option<Audience>,
}

/// The `aud` claim: one string or an array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// The audiences as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(a) => a,
        }
    }
}

/// Verified claims of a Connect JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Required: [`verify`] refuses a token without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qsh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// On the app's session tokens: when the chain of tokens began (Unix seconds), copied on
    /// every renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// Reads header and claims without verifying anything.
pub fn peek(token: &str) -> Result<(PeekedHeader, PeekedClaims), AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::MalformedToken);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::MalformedToken);
    };
    Ok((decode_part(header)?, decode_part(payload)?))
}

fn decode_part<T: DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AuthError::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::MalformedToken)
}

/// Verifies a token's signature with `key` under exactly one algorithm, then its time claims.
///
/// `exp` is required; `nbf` is honoured and `iat` may not lie in the future, each with `leeway`
/// seconds of tolerance.
pub fn verify(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    leeway: u64,
) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = leeway;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| reason(&e))?
        .claims;
    let now = jsonwebtoken::get_current_timestamp() as i64;
    if claims.iat.is_some_and(|iat| iat > now + leeway as i64) {
        return Err(AuthError::IssuedInFuture);
    }
    Ok(claims)
}

/// The reason code of a token the JWT library refused.
pub(super) fn reason(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::InvalidIssuer,
        ErrorKind::InvalidAudience => AuthError::InvalidAudience,
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::UnsupportedAlgorithm
        }
        _ => AuthError::MalformedToken,
    }
}

/// Signs claims with HS256.
pub fn sign_hs256(claims: &impl Serialize, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of serialisable claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::qsh;

    #[derive(Deserialize)]
    struct Vectors {
        secret: String,
        tests: Vec<Vector>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Vector {
        name: String,
        canonical_url: String,
        signed_url: String,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../../tests/fixtures/jwt-signed-urls.json")).unwrap()
    }

    fn verify_ignoring_expiry(token: &str, secret: &str) -> Claims {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims
    }

    /// Atlassian's vectors predate the rule that escapes `&` in the path as `%26` (their only
    /// such case is "BasePath RFC3986 Subdelimiters"); apply the rule to the published string.
    fn expected_canonical(published: &str, path: &str) -> String {
        published.replacen(path, &path.replace('&', "%26"), 1)
    }

    #[test]
    fn every_published_vector_verifies_and_its_canonical_request_matches() {
        let vectors = vectors();
        assert_eq!(vectors.tests.len(), 78);
        for case in &vectors.tests {
            let url = url::Url::parse(&case.signed_url).unwrap();
            let token = url
                .query_pairs()
                .find(|(k, _)| k == "jwt")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            let claims = verify_ignoring_expiry(&token, &vectors.secret);
            assert_eq!(
                claims.qsh.as_deref(),
                Some(qsh::hash(&case.canonical_url).as_str()),
                "{}: qsh claim is the hash of the published canonical request",
                case.name
            );
            let ours = qsh::canonical_request("GET", url.path(), url.query(), "");
            assert_eq!(
                ours,
                expected_canonical(&case.canonical_url, url.path()),
                "{}",
                case.name
            );
            if !url.path().contains('&') {
                assert_eq!(ours, case.canonical_url, "{}", case.name);
                assert_eq!(claims.qsh.unwrap(), qsh::hash(&ours), "{}", case.name);
            }
        }
    }

    #[test]
    fn every_published_vector_is_reproduced_when_signing() {
        let vectors = vectors();
        for case in vectors
            .tests
            .iter()
            .filter(|c| !c.signed_url.split('?').next().unwrap().contains('&'))
        {
            let url = url::Url::parse(&case.signed_url).unwrap();
            let token = url
                .query_pairs()
                .find(|(k, _)| k == "jwt")
                .unwrap()
                .1
                .into_owned();
            let published = verify_ignoring_expiry(&token, &vectors.secret);
            let ours = Claims {
                qsh: Some(qsh::qsh("GET", url.path(), url.query(), "")),
                ..published.clone()
            };
            let signed = sign_hs256(&ours, vectors.secret.as_bytes());
            let back = verify_ignoring_expiry(&signed, &vectors.secret);
            assert_eq!(back.qsh, published.qsh, "{}", case.name);
            assert_eq!(back.iss, published.iss, "{}", case.name);
        }
    }

    #[test]
    fn peek_refuses_oversized_and_malformed_tokens() {
        assert!(matches!(
            peek(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(AuthError::MalformedToken)
        ));
        assert!(matches!(peek("garbage"), Err(AuthError::MalformedToken)));
        assert!(matches!(peek("a.b.c.d"), Err(AuthError::MalformedToken)));
        assert!(matches!(peek("!!.??.xx"), Err(AuthError::MalformedToken)));
    }

    #[test]
    fn peek_reads_alg_kid_and_issuer() {
        let token = sign_hs256(
            &serde_json::json!({"iss": "tenant", "exp": 1, "aud": ["a", "b"]}),
            b"secret",
        );
        let (header, claims) = peek(&token).unwrap();
        assert_eq!(header.alg, "HS256");
        assert_eq!(claims.iss.as_deref(), Some("tenant"));
        assert_eq!(
            claims.aud.unwrap().as_slice(),
            ["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn iat_in_the_future_is_refused_beyond_the_leeway() {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let key = DecodingKey::from_secret(b"s");
        let soon = sign_hs256(
            &serde_json::json!({"iss": "t", "exp": now + 600, "iat": now + 20}),
            b"s",
        );
        assert!(verify(&soon, &key, Algorithm::HS256, 30).is_ok());
        let later = sign_hs256(
            &serde_json::json!({"iss": "t", "exp": now + 600, "iat": now + 120}),
            b"s",
        );
        assert!(matches!(
            verify(&later, &key, Algorithm::HS256, 30),
            Err(AuthError::IssuedInFuture)
        ));
    }

    #[test]
    fn exp_is_required() {
        let token = sign_hs256(&serde_json::json!({"iss": "t"}), b"s");
        let err = verify(&token, &DecodingKey::from_secret(b"s"), Algorithm::HS256, 0).unwrap_err();
        assert!(matches!(
            err,
            AuthError::MissingClaim | AuthError::MalformedToken
        ));
    }
}
