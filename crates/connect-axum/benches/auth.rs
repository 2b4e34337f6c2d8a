//! The CPU cost of authenticating one request: decode the JWT, verify HS256, compute the QSH.

use std::hint::black_box;

use connect_axum::auth::{jwt, qsh};
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

criterion_group!(benches, authenticate);
criterion_main!(benches);
