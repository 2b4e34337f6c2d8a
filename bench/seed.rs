//! Seeds a running server for `bench/run.sh`: installs tenants through the real signed
//! `/installed` hook (or, with `--direct`, straight into Postgres for large counts), writes 10
//! notes per tenant on PROJ-1, checks one tenant's list, and writes one valid JWT per tenant.
//!
//! `bench-seed --app URL --base-url URL --keys-port PORT --tenants N --tokens FILE [--direct DB_URL]
//! [--secret-version V] [--install-only]`
//!
//! `--secret-version` installs with another sharedSecret (a reinstall that rotates it);
//! `--install-only` skips the notes and the check (for `ops/two-replicas.sh`).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use connect_axum::protocol::qsh;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};

const APP_KEY: &str = "connect-axum-issue-notes";
const NOTES: &str = "/api/issues/PROJ-1/notes";

struct Args {
    app: String,
    base_url: String,
    keys_port: u16,
    tenants: usize,
    tokens: String,
    direct: Option<String>,
    secret_version: u32,
    install_only: bool,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        app: String::new(),
        base_url: String::new(),
        keys_port: 0,
        tenants: 1000,
        tokens: "bench/out/tokens.txt".into(),
        direct: None,
        secret_version: 0,
        install_only: false,
    };
    while let Some(flag) = it.next() {
        if flag == "--install-only" {
            args.install_only = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--app" => args.app = value,
            "--base-url" => args.base_url = value,
            "--keys-port" => args.keys_port = value.parse().expect("--keys-port"),
            "--tenants" => args.tenants = value.parse().expect("--tenants"),
            "--tokens" => args.tokens = value,
            "--direct" => args.direct = Some(value),
            "--secret-version" => args.secret_version = value.parse().expect("--secret-version"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    args
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn client_key(i: usize) -> String {
    format!("bench-tenant-{i}")
}

fn secret(i: usize, version: u32) -> String {
    if version == 0 {
        format!("bench-secret-{i}-0123456789abcdef0123456789abcdef")
    } else {
        format!("bench-secret-{i}-v{version}-0123456789abcdef0123456789abcdef")
    }
}

fn tenant_token(i: usize, method: &str, path: &str, ttl: u64, version: u32) -> String {
    let claims = json!({
        "iss": client_key(i), "sub": format!("bench-user-{i}"),
        "iat": now(), "exp": now() + ttl, "qsh": qsh::qsh(method, path, None, ""),
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret(i, version).as_bytes()),
    )
    .unwrap()
}

#[tokio::main]
async fn main() {
    let args = args();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    match &args.direct {
        Some(db) => seed_directly(db, args.tenants).await,
        None => install_and_post(&args, &http).await,
    }
    eprintln!(
        "seeded {} tenants in {:.1?}",
        args.tenants,
        started.elapsed()
    );

    if !args.install_only {
        let (status, notes) = list_notes(&http, &args.app, 0).await;
        assert_eq!(status, 200, "GET {NOTES} answered {status}: {notes}");
        assert_eq!(
            notes["notes"].as_array().map(Vec::len),
            Some(10),
            "expected 10 notes: {notes}"
        );
        eprintln!("check: GET {NOTES} as tenant 0 -> 200 with 10 rows");
    }

    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.tokens).unwrap());
    for i in 0..args.tenants {
        writeln!(
            out,
            "{}",
            tenant_token(i, "GET", NOTES, 3600, args.secret_version)
        )
        .unwrap();
    }
    out.flush().unwrap();
}

async fn list_notes(http: &reqwest::Client, app: &str, i: usize) -> (u16, Value) {
    let response = http
        .get(format!("{app}{NOTES}"))
        .header(
            "authorization",
            format!("JWT {}", tenant_token(i, "GET", NOTES, 60, 0)),
        )
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The default path: every tenant through the signed install hook, every note through the API.
async fn install_and_post(args: &Args, http: &reqwest::Client) {
    let key = RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).unwrap();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let signing = Arc::new(
        EncodingKey::from_rsa_pem(key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap(),
    );
    // A fresh key id per run: servers cache keys by id.
    let kid = format!("bench-key-{}", rand08::random::<u32>());
    let keys = Router::new().route(
        &format!("/{kid}"),
        axum::routing::get(move || async move { public_pem }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.keys_port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, keys).await });

    let installs = futures_util::stream::iter(0..args.tenants).map(|i| {
        let signing = signing.clone();
        let kid = kid.clone();
        async move {
            let claims = json!({
                "jti": format!("seed-{i}-v{}", args.secret_version),
                "iss": client_key(i), "aud": args.base_url, "iat": now(), "exp": now() + 180,
                "qsh": qsh::qsh("POST", "/installed", None, ""),
            });
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.clone());
            let token = jsonwebtoken::encode(&header, &claims, &signing).unwrap();
            let payload = json!({
                "key": APP_KEY, "clientKey": client_key(i), "sharedSecret": secret(i, args.secret_version),
                "baseUrl": format!("https://bench-{i}.atlassian.net"), "productType": "jira",
                "eventType": "installed", "oauthClientId": format!("oauth-{i}"),
            });
            let response = http
                .post(format!("{}/installed", args.app))
                .header("authorization", format!("JWT {token}"))
                .json(&payload)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 204, "install {i}: {}", response.text().await.unwrap_or_default());
            if args.install_only {
                return;
            }
            for n in 0..10 {
                let response = http
                    .post(format!("{}{NOTES}", args.app))
                    .header("authorization", format!("JWT {}", tenant_token(i, "POST", NOTES, 60, 0)))
                    .json(&json!({ "body": format!("Note {n} of tenant {i}: the quick brown fox jumps over the lazy dog.") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201, "note {n} of tenant {i}");
            }
        }
    });
    installs.buffer_unordered(16).collect::<Vec<()>>().await;
}

/// For large tenant counts: the same rows, written with two statements.
async fn seed_directly(database_url: &str, tenants: usize) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .unwrap();
    // Sealed as the server seals them (SECRETS_KEY, each secret bound to its clientKey), in
    // batches: a secret written in plain text would not open.
    let current = std::env::var("SECRETS_KEY").expect("--direct needs the server's SECRETS_KEY");
    let keyring = connect_axum::store::Keyring::parse(&current, "").expect("SECRETS_KEY");
    for start in (0..tenants).step_by(1000) {
        let batch: Vec<usize> = (start..tenants.min(start + 1000)).collect();
        let keys: Vec<String> = batch.iter().map(|&i| client_key(i)).collect();
        let sealed: Vec<_> = batch
            .iter()
            .map(|&i| {
                keyring.seal(
                    &client_key(i),
                    &connect_axum::store::SharedSecret::new(secret(i, 0)),
                )
            })
            .collect();
        sqlx::query(
            "insert into tenant (client_key, app_key, shared_secret, secret_key_id, base_url, product_type, oauth_client_id, enabled, installed_at, updated_at) \
             select k, $4, s, $3, 'https://' || k || '.atlassian.net', 'jira', 'oauth-' || k, true, now(), now() \
             from unnest($1::text[], $2::text[]) as t(k, s) on conflict do nothing",
        )
        .bind(&keys)
        .bind(sealed.iter().map(|s| s.ciphertext.clone()).collect::<Vec<_>>())
        .bind(keyring.current_id())
        .bind(APP_KEY)
        .execute(&pool)
        .await
        .unwrap();
    }
    // Ids are numbered per tenant (1 to 10), the tenant's counter at the last, as the server's
    // inserts leave them.
    sqlx::query(
        "insert into note (client_key, id, issue_key, body, author, created_at) \
         select 'bench-tenant-' || i, n + 1, 'PROJ-1', 'Note ' || n || ' of tenant ' || i || ': the quick brown fox jumps over the lazy dog.', \
                'bench-user-' || i, now() \
         from generate_series(0, $1 - 1) as i, generate_series(0, 9) as n on conflict do nothing",
    )
    .bind(tenants as i64)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into note_sequence (client_key, last_id) \
         select 'bench-tenant-' || i, 10 from generate_series(0, $1 - 1) as i on conflict do nothing",
    )
    .bind(tenants as i64)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("analyze").execute(&pool).await.unwrap();
}
