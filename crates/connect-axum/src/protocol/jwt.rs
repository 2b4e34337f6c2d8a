//! JWT decoding and verification: the unverified peek that finds the signer, and the verified
//! decode that checks signature, algorithm and time claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a token did not decode or verify; the doors map each to their own reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url JSON parts, longer than [`MAX_TOKEN_LEN`], or a claim of the wrong type.
    #[error("the JWT could not be decoded")]
    Malformed,
    /// The header's `alg` is missing or not the one algorithm the verifier takes.
    #[error("the JWT's algorithm is not accepted here")]
    UnsupportedAlgorithm,
    /// A claim the verifier requires (`exp` always) is absent.
    #[error("the JWT lacks a required claim")]
    MissingClaim,
    /// The signature does not verify with the key given.
    #[error("the JWT's signature does not verify")]
    BadSignature,
    /// `exp` is past, beyond the leeway.
    #[error("the JWT has expired")]
    Expired,
    /// `nbf` is still ahead, beyond the leeway.
    #[error("the JWT is not valid yet")]
    NotYetValid,
    /// `iat` is ahead of now, beyond the leeway ([`check_issued`]).
    #[error("the JWT was issued in the future")]
    IssuedInFuture,
    /// The token lives longer than [`TimeLimits::max_lifetime`] ([`check_lifetime`]).
    #[error("the JWT lives longer than this app accepts (MAX_TOKEN_LIFETIME_SECS)")]
    LifetimeTooLong,
    /// `iss` is not the issuer the verifier requires.
    #[error("the JWT's issuer is not the one expected")]
    InvalidIssuer,
    /// `aud` is not the audience the verifier requires.
    #[error("the JWT's audience is not the one expected")]
    InvalidAudience,
}

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The header fields read before verification.
#[derive(Debug, Deserialize)]
pub struct PeekedHeader {
    /// The signing algorithm the token names, `HS256` or `RS256` for the tokens taken here.
    pub alg: String,
    /// The id of the public key that signs it (signed installs, Forge tokens); not read on
    /// HS256 tokens.
    pub kid: Option<String>,
}

/// The claims read before verification, only to find who signed the token.
#[derive(Debug, Deserialize)]
pub struct PeekedClaims {
    /// The issuer: a Connect tenant's clientKey, or the app key on its own session tokens.
    pub iss: Option<String>,
    /// The audience; the tenant's clientKey on the app's session tokens.
    pub aud: Option<Audience>,
}

/// The `aud` claim: one string or an array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "…"`.
    One(String),
    /// `"aud": ["…", …]`.
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
    /// The issuer: the tenant's clientKey, or the app key on the app's session tokens.
    pub iss: String,
    /// The Atlassian account id of the user behind the call, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The audience: the tenant's clientKey on session tokens, the app's base URL on signed
    /// installs; product JWTs usually carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Required: [`verify`] refuses a token without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// When the token was issued (Unix seconds); required on lifecycle tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not valid before (Unix seconds), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The token's id; a lifecycle token without one is known by its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The query string hash: of the request's method, path and query, or `context-qsh` on a
    /// context token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qsh: Option<String>,
    /// The `context` claim of context and session tokens: the product context the page was
    /// opened in (`{"jira": {"issue": {"key": …}}}`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// On the app's session tokens: when the chain of tokens began (Unix seconds), copied on
    /// every renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// Reads header and claims without verifying anything.
pub fn peek(token: &str) -> Result<(PeekedHeader, PeekedClaims), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    Ok((decode_part(header)?, decode_part(payload)?))
}

/// The unverified payload of `token` as `T`: only to choose how to verify it.
pub fn peek_payload<T: DeserializeOwned>(token: &str) -> Result<T, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    decode_part(payload)
}

fn decode_part<T: DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// The time rules every verified token meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: u64,
    /// The longest lifetime accepted, in seconds: `exp − iat`, or for a token without `iat`
    /// what is left of it (`exp − now`, with `leeway` for the issuer's clock).
    pub max_lifetime: u64,
}

/// Verifies a token's signature with `key` under exactly one algorithm, then its time claims.
///
/// `exp` is required; `nbf` is honoured and `iat` may not lie in the future, each with
/// `limits.leeway` seconds of tolerance; the token may not live longer than
/// `limits.max_lifetime` (see [`check_lifetime`]).
pub fn verify(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    limits: TimeLimits,
) -> Result<Claims, TokenError> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = limits.leeway;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| reason(&e))?
        .claims;
    let now = jsonwebtoken::get_current_timestamp() as i64;
    check_issued(claims.iat, now, limits)?;
    check_lifetime(
        claims.exp.ok_or(TokenError::MissingClaim)?,
        claims.iat,
        now,
        limits,
    )?;
    Ok(claims)
}

/// Refuses a token whose `iat` is later than `now`, the issuer's clock allowed to run
/// `limits.leeway` ahead: a token made for later is either forged or from a broken clock.
pub fn check_issued(iat: Option<i64>, now: i64, limits: TimeLimits) -> Result<(), TokenError> {
    if iat.is_some_and(|iat| iat > now.saturating_add(seconds(limits.leeway))) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

/// Refuses a token meant to live longer than `limits.max_lifetime`: `exp − iat` when it has an
/// `iat`, otherwise `exp − now`, the issuer's clock allowed to run `limits.leeway` ahead.
///
/// A stolen token is worth only as long as it lives; Atlassian's product tokens live minutes.
pub fn check_lifetime(
    exp: i64,
    iat: Option<i64>,
    now: i64,
    limits: TimeLimits,
) -> Result<(), TokenError> {
    let start = iat.unwrap_or_else(|| now.saturating_add(seconds(limits.leeway)));
    if exp.saturating_sub(start) > seconds(limits.max_lifetime) {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(())
}

fn seconds(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// The reason code of a token the JWT library refused.
pub fn reason(e: &jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::InvalidIssuer,
        ErrorKind::InvalidAudience => TokenError::InvalidAudience,
        ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenError::UnsupportedAlgorithm
        }
        _ => TokenError::Malformed,
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
    use crate::protocol::qsh;

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
            Err(TokenError::Malformed)
        ));
        assert!(matches!(peek("garbage"), Err(TokenError::Malformed)));
        assert!(matches!(peek("a.b.c.d"), Err(TokenError::Malformed)));
        assert!(matches!(peek("!!.??.xx"), Err(TokenError::Malformed)));
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

    fn limits(leeway: u64) -> TimeLimits {
        TimeLimits {
            leeway,
            max_lifetime: 3600,
        }
    }

    #[test]
    fn iat_in_the_future_is_refused_beyond_the_leeway() {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let key = DecodingKey::from_secret(b"s");
        let soon = sign_hs256(
            &serde_json::json!({"iss": "t", "exp": now + 600, "iat": now + 20}),
            b"s",
        );
        assert!(verify(&soon, &key, Algorithm::HS256, limits(30)).is_ok());
        let later = sign_hs256(
            &serde_json::json!({"iss": "t", "exp": now + 600, "iat": now + 120}),
            b"s",
        );
        assert!(matches!(
            verify(&later, &key, Algorithm::HS256, limits(30)),
            Err(TokenError::IssuedInFuture)
        ));
    }

    #[test]
    fn exp_is_required() {
        let token = sign_hs256(&serde_json::json!({"iss": "t"}), b"s");
        let err = verify(
            &token,
            &DecodingKey::from_secret(b"s"),
            Algorithm::HS256,
            limits(0),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TokenError::MissingClaim | TokenError::Malformed
        ));
    }

    #[test]
    fn a_token_may_live_at_most_the_maximum_lifetime() {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let key = DecodingKey::from_secret(b"s");
        let token = |claims: serde_json::Value| sign_hs256(&claims, b"s");
        let ok = [
            serde_json::json!({"iss": "t", "iat": now, "exp": now + 180}),
            serde_json::json!({"iss": "t", "iat": now, "exp": now + 3600}),
            serde_json::json!({"iss": "t", "iat": now - 3000, "exp": now + 600}),
            serde_json::json!({"iss": "t", "exp": now + 3600}),
            serde_json::json!({"iss": "t", "exp": now + 3620}),
        ];
        for claims in ok {
            assert!(
                verify(&token(claims.clone()), &key, Algorithm::HS256, limits(30)).is_ok(),
                "{claims}"
            );
        }
        let too_long = [
            serde_json::json!({"iss": "t", "iat": now, "exp": now + 3601}),
            serde_json::json!({"iss": "t", "iat": now, "exp": 4_922_000_000_i64}),
            serde_json::json!({"iss": "t", "iat": now - 7200, "exp": now + 60}),
            serde_json::json!({"iss": "t", "iat": 0, "exp": now + 60}),
            serde_json::json!({"iss": "t", "iat": i64::MIN, "exp": now + 60}),
            serde_json::json!({"iss": "t", "exp": now + 3700}),
        ];
        for claims in too_long {
            assert!(
                matches!(
                    verify(&token(claims.clone()), &key, Algorithm::HS256, limits(30)),
                    Err(TokenError::LifetimeTooLong)
                ),
                "{claims}"
            );
        }
    }

    #[test]
    fn the_lifetime_check_never_overflows() {
        let all = TimeLimits {
            leeway: u64::MAX,
            max_lifetime: u64::MAX,
        };
        assert!(check_lifetime(i64::MAX, Some(i64::MIN), i64::MAX, all).is_ok());
        assert!(check_lifetime(i64::MAX, None, i64::MIN, limits(0)).is_err());
        assert!(check_lifetime(i64::MIN, Some(i64::MAX), 0, limits(0)).is_ok());
    }
}
