//! The CPU cost of authenticating one request: decode the JWT, verify HS256, compute the QSH; and
//! beside it the Forge door's: verify a Forge Invocation Token (RS256, key from the cached JWKS)
//! and read its claims.

#![expect(missing_docs, reason = "criterion_main! generates a `pub fn main`")]

use std::hint::black_box;

use connect_axum::protocol::{jwt, qsh};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::json;

const LIMITS: jwt::TimeLimits = jwt::TimeLimits {
    leeway: 30,
    max_lifetime: 3600,
};

fn authenticate(c: &mut Criterion) {
    let secret = "a-tenant-shared-secret-0123456789abcdef";
    let path = "/api/issues/PROJ-1/notes";
    let query = "lic=none&cp=%2Fjira&xdm_e=https%3A%2F%2Facme.atlassian.net&cv=1001.0.0";
    let now = jsonwebtoken::get_current_timestamp();
    let token = jwt::sign_hs256(
        &json!({
            "iss": "5c2f8a4e-0b1d-3c6f-9e7a-1d2b3c4d5e6f", "sub": "557058:f4c9e9f0-1234-4d5e-8f00-0a1b2c3d4e5f",
            "iat": now, "exp": now + 3600,
            "qsh": qsh::qsh("GET", path, Some(query), ""),
            "context": {"jira": {"issue": {"key": "PROJ-1"}}},
        }),
        secret.as_bytes(),
    );

    c.bench_function("qsh of a page request", |b| {
        b.iter(|| {
            qsh::qsh(
                black_box("GET"),
                black_box(path),
                black_box(Some(query)),
                "",
            )
        })
    });
    c.bench_function("jwt peek + HS256 verify", |b| {
        b.iter(|| {
            let (header, claims) = jwt::peek(black_box(&token)).unwrap();
            assert_eq!(header.alg, "HS256");
            black_box(claims.iss);
            let key = DecodingKey::from_secret(secret.as_bytes());
            jwt::verify(black_box(&token), &key, Algorithm::HS256, LIMITS).unwrap()
        })
    });
    c.bench_function("authenticate a request (peek + verify + qsh)", |b| {
        b.iter(|| {
            let (header, _) = jwt::peek(black_box(&token)).unwrap();
            assert_eq!(header.alg, "HS256");
            let key = DecodingKey::from_secret(secret.as_bytes());
            let claims = jwt::verify(black_box(&token), &key, Algorithm::HS256, LIMITS).unwrap();
            let expected = qsh::qsh("GET", black_box(path), black_box(Some(query)), "");
            assert_eq!(claims.qsh.as_deref(), Some(expected.as_str()));
        })
    });
}

fn verify_forge_invocation(c: &mut Criterion) {
    use connect_axum::auth::ForgeKeys;
    use connect_axum::auth::forge::{FIT_ISSUER, InvocationClaims};
    use connect_axum_testing::FakeForge;

    const APP: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000be";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (fake, key) = runtime.block_on(async {
        let fake = FakeForge::start(APP, &[0]).await;
        let url = url::Url::parse(&fake.url).unwrap();
        let keys = ForgeKeys::new(
            &url,
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(5),
        );
        let key = keys
            .get(&connect_axum_testing::forge::kid(0))
            .await
            .unwrap();
        (fake, key)
    });
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let token = fake
        .fit_on(&fake.site("acme"))
        .valid(now, now + 3600)
        .sign();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_issuer(&[FIT_ISSUER]);
    validation.set_audience(&[APP]);
    c.bench_function("FIT: RS256 verify + typed claims", |b| {
        b.iter(|| {
            let claims =
                jsonwebtoken::decode::<InvocationClaims>(black_box(&token), &key, &validation)
                    .unwrap()
                    .claims;
            black_box(claims.app.installation_id.len())
        })
    });
}

criterion_group!(benches, authenticate, verify_forge_invocation);
criterion_main!(benches);
