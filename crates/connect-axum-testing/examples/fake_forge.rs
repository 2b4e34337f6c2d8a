//! The testing kit's Forge as a process, for a benchmark of an app's Forge Remote door: serves
//! Forge's signing keys on a loopback port and prints the app's settings (`FORGE_APP_ID=…`,
//! `FORGE_JWKS_URL=…`, one a line, then an empty line); once the app at `--app URL` answers
//! `/readyz`, installs `--installations N` sites through Forge alone (the `installed` delivery),
//! adds 10 notes to PROJ-1 of each (`POST /forge/api/issues/PROJ-1/notes`) and writes a user's
//! invocation token of each site (valid 30 minutes) to `--tokens FILE`, one a line; then waits
//! for SIGTERM or SIGINT.
//!
//! ```text
//! cargo run -p connect-axum-testing --example fake-forge -- --app http://127.0.0.1:3000 --installations 10 --tokens fits.txt
//! ```

use std::io::Write as _;
use std::time::Duration;

use connect_axum::auth::forge::SYSTEM_TOKEN_HEADER;
use connect_axum_testing::FakeForge;
use connect_axum_testing::forge::opaque_system_token;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

const APP_ID: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000be";

#[tokio::main]
async fn main() {
    let (mut app, mut installations, mut tokens) =
        (String::new(), 10usize, String::from("fits.txt"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} takes a value"));
        match arg.as_str() {
            "--app" => app = value,
            "--installations" => installations = value.parse().expect("--installations N"),
            "--tokens" => tokens = value,
            other => panic!("unknown argument {other}"),
        }
    }
    let forge = FakeForge::start(APP_ID, &[0]).await;
    let vars = forge.vars();
    for name in ["FORGE_APP_ID", "FORGE_JWKS_URL"] {
        println!("{name}={}", vars(name).expect("set"));
    }
    println!();
    std::io::stdout().flush().expect("stdout");

    let http = reqwest::Client::new();
    for _ in 0..600 {
        if http
            .get(format!("{app}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = chrono_now();
    let mut fits = Vec::new();
    for n in 0..installations {
        let site = forge.site(&format!("site-{n}"));
        let installed = http
            .post(format!("{app}/forge/events"))
            .bearer_auth(forge.trigger(&site).sign())
            .header(SYSTEM_TOKEN_HEADER, opaque_system_token())
            .json(&json!({ "eventType": "avi:forge:installed:app" }))
            .send()
            .await
            .expect("the app answers");
        assert!(
            installed.status().is_success(),
            "installed: {}",
            installed.status()
        );
        let fit = forge.fit_on(&site).valid(now, now + 1800).sign();
        for i in 0..10 {
            let created = http
                .post(format!("{app}/forge/api/issues/PROJ-1/notes"))
                .bearer_auth(&fit)
                .json(&json!({ "body": format!("note {i}") }))
                .send()
                .await
                .expect("the app answers");
            assert_eq!(created.status(), 201, "a note of site {n}");
        }
        fits.push(fit);
    }
    std::fs::write(&tokens, fits.join("\n") + "\n").expect("the tokens file is written");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}
