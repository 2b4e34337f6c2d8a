//! Fuzzes `jwt::peek` and HS256 `jwt::verify`: neither may panic, and `verify` accepts only a
//! token whose signature is the HS256 MAC of its own header and payload under the secret, whose
//! header says HS256, whose time claims hold and whose lifetime is within the cap.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_axum::protocol::jwt;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sha2::Sha256;

const SECRET: &[u8] = b"s0m3-sh@r3d-s3cr37";
const LEEWAY: u64 = 30;
const MAX_LIFETIME: u64 = 3600;
const LIMITS: jwt::TimeLimits = jwt::TimeLimits {
    leeway: LEEWAY,
    max_lifetime: MAX_LIFETIME,
};

/// A token built from fuzzed parts and signed, then perhaps tampered with.
#[derive(Arbitrary, Debug)]
struct Built {
    alg: Alg,
    typ: Option<String>,
    header_extra: Option<(String, String)>,
    /// Replaces the JSON payload when set.
    raw_payload: Option<Vec<u8>>,
    iss: Option<String>,
    /// Offsets from now, or absolute values when `absolute` is set.
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    absolute: bool,
    qsh: Option<String>,
    claim_extra: Option<(String, String)>,
    key: Key,
    /// Flips bits of one byte of the finished token.
    tamper: Option<(u16, u8)>,
    /// Appended to the finished token.
    suffix: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum Alg {
    Hs256,
    Hs384,
    Hs512,
    None,
    Rs256,
    LowerHs256,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Right,
    Wrong(Vec<u8>),
    /// The right MAC with `=` padding, or none at all.
    Padded,
    Empty,
}

fn mac(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(input);
    m.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn build(b: &Built) -> (String, bool) {
    let alg = match &b.alg {
        Alg::Hs256 => "HS256",
        Alg::Hs384 => "HS384",
        Alg::Hs512 => "HS512",
        Alg::None => "none",
        Alg::Rs256 => "RS256",
        Alg::LowerHs256 => "hs256",
        Alg::Other(s) => s,
    };
    let mut header = Map::new();
    header.insert("alg".into(), alg.into());
    if let Some(t) = &b.typ {
        header.insert("typ".into(), t.as_str().into());
    }
    if let Some((k, v)) = &b.header_extra {
        header.insert(k.clone(), v.as_str().into());
    }
    let time = |t: Option<i64>| {
        t.map(|t| {
            if b.absolute {
                t
            } else {
                now().saturating_add(t % 100_000)
            }
        })
    };
    let payload = match &b.raw_payload {
        Some(raw) => raw.clone(),
        None => {
            let mut claims = Map::new();
            if let Some(iss) = &b.iss {
                claims.insert("iss".into(), iss.as_str().into());
            }
            for (name, t) in [("exp", b.exp), ("iat", b.iat), ("nbf", b.nbf)] {
                if let Some(t) = time(t) {
                    claims.insert(name.into(), t.into());
                }
            }
            if let Some(q) = &b.qsh {
                claims.insert("qsh".into(), q.as_str().into());
            }
            if let Some((k, v)) = &b.claim_extra {
                claims.insert(k.clone(), json!(v));
            }
            serde_json::to_vec(&Value::Object(claims)).unwrap()
        }
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Value::Object(header)).unwrap()),
        URL_SAFE_NO_PAD.encode(&payload)
    );
    let signature = match &b.key {
        Key::Right => URL_SAFE_NO_PAD.encode(mac(SECRET, input.as_bytes())),
        Key::Wrong(k) => URL_SAFE_NO_PAD.encode(mac(k, input.as_bytes())),
        Key::Padded => {
            base64::engine::general_purpose::URL_SAFE.encode(mac(SECRET, input.as_bytes()))
        }
        Key::Empty => String::new(),
    };
    let mut token = format!("{input}.{signature}").into_bytes();
    if let Some((at, bits)) = b.tamper
        && !token.is_empty()
    {
        let at = at as usize % token.len();
        token[at] ^= bits;
    }
    let mut token = String::from_utf8_lossy(&token).into_owned();
    if let Some(s) = &b.suffix {
        token.push_str(s);
    }
    // Must be accepted: a plain, correctly signed, unexpired token with an issuer.
    let must_pass = matches!(b.alg, Alg::Hs256)
        && b.typ.as_deref().is_none_or(|t| t == "JWT")
        && b.header_extra.is_none()
        && b.raw_payload.is_none()
        && b.iss.is_some()
        && time(b.exp).is_some_and(|e| e > now() + 60 && e < 1 << 52)
        && time(b.iat).is_none_or(|t| t >= 0 && t < now())
        && time(b.nbf).is_none_or(|t| t >= 0 && t < now())
        // A second may pass between building the claims and this check.
        && time(b.exp).is_some_and(|e| {
            e.saturating_sub(time(b.iat).unwrap_or_else(now)) < MAX_LIFETIME as i64 - 2
        })
        && b.claim_extra.as_ref().is_none_or(|(k, _)| {
            !["iss", "sub", "aud", "exp", "iat", "nbf", "qsh", "context"].contains(&k.as_str())
        })
        && matches!(b.key, Key::Right)
        && b.tamper.is_none_or(|(_, bits)| bits == 0)
        && b.suffix.as_deref().is_none_or(str::is_empty);
    (token, must_pass)
}

/// What must hold of any token `verify` accepted.
fn check_accepted(token: &str, claims: &jwt::Claims, before: i64) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted token has three parts");
    let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("accepted signature is canonical base64url");
    assert_eq!(
        signature,
        mac(SECRET, signing_input.as_bytes()),
        "accepted token carries the HS256 MAC of its signing input"
    );
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256", "accepted token's header says HS256");
    let after = now();
    let leeway = LEEWAY as i64;
    let exp = claims.exp.expect("accepted token has exp");
    assert!(exp >= before - leeway, "accepted token has not expired");
    if let Some(nbf) = claims.nbf {
        assert!(nbf <= after + leeway, "accepted token is already valid");
    }
    if let Some(iat) = claims.iat {
        assert!(
            iat <= after + leeway,
            "accepted token was not issued in the future"
        );
    }
    let lived = exp.saturating_sub(claims.iat.unwrap_or(after));
    let cap = MAX_LIFETIME as i64 + if claims.iat.is_some() { 0 } else { leeway };
    assert!(lived <= cap, "accepted token lives at most the cap");
}

fn run(token: &str, must_pass: bool) {
    let _ = jwt::peek(token);
    let before = now();
    let key = DecodingKey::from_secret(SECRET);
    match jwt::verify(token, &key, Algorithm::HS256, LIMITS) {
        Ok(claims) => check_accepted(token, &claims, before),
        Err(e) => assert!(!must_pass, "a valid token was refused: {e:?}"),
    }
}

// The input is tried both as a token and as the recipe for one, so real tokens make good seeds.
fuzz_target!(|data: &[u8]| {
    run(&String::from_utf8_lossy(data), false);
    if let Ok(built) = Built::arbitrary_take_rest(Unstructured::new(data)) {
        let (token, must_pass) = build(&built);
        run(&token, must_pass);
    }
});
