//! The command line, run as the real binary against the test's store.

use std::process::{Command, Output};

use axum::http::StatusCode;
use connect_axum_testing::on_both_stores;

use crate::helpers::*;

fn cli(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connect-axum"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("SECRETS_KEY", secrets_key())
        .env("BASE_URL", BASE_URL)
        .env_remove("PORT")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn tenants_list_and_show_never_print_the_secret(app: TestApp) {
    let a = app.install("a").await;
    let b = app.install("b").await;
    app.hook(&b, "disabled").await;
    let list = cli(&app.database_url, &["tenants", "list"]);
    assert!(list.status.success());
    let text = stdout(&list);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("a-client-key\tenabled\tjira\thttps://a.atlassian.net\t"),
        "{text}"
    );
    assert!(lines[1].starts_with("b-client-key\tdisabled\t"), "{text}");
    let show = cli(&app.database_url, &["tenants", "show", &a.client_key]);
    assert!(show.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["clientKey"], a.client_key);
    assert_eq!(shown["state"], "enabled");
    assert_eq!(shown["oauthClientId"], "oauth-client");
    assert_eq!(shown["origin"], "connect");
    for output in [&list, &show] {
        let all = format!(
            "{}{}",
            stdout(output),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !all.contains(&a.secret) && !all.contains(&b.secret),
            "a secret was printed"
        );
    }
    assert_eq!(
        cli(&app.database_url, &["tenants", "show", "nobody"])
            .status
            .code(),
        Some(3)
    );
}

async fn token_mints_a_jwt_the_server_accepts(app: TestApp) {
    let a = app.install("a").await;
    let target = "/api/issues/PROJ-1/notes?x=1";
    let output = cli(
        &app.database_url,
        &["token", &a.client_key, "GET", target, "--sub", "user-1"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = stdout(&output).trim().to_owned();
    let response = app.call("GET", target, Some(&token), None).await;
    assert_eq!(response.status, StatusCode::OK);
    let expired = cli(
        &app.database_url,
        &["token", &a.client_key, "GET", target, "--exp", "0"],
    );
    let token = stdout(&expired).trim().to_owned();
    let response = app.call("GET", target, Some(&token), None).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "exp 0 is within the leeway"
    );
    assert_eq!(
        cli(&app.database_url, &["token", "nobody", "GET", "/"])
            .status
            .code(),
        Some(3)
    );
}

async fn personal_data_report_runs_on_demand(app: TestApp) {
    let report = cli(&app.database_url, &["personal-data", "report"]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        stdout(&report).contains("reported 0 accounts of 0 tenants"),
        "{}",
        stdout(&report)
    );
}

async fn check_and_migrate_report_a_healthy_store(app: TestApp) {
    let check = cli(&app.database_url, &["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let text = stdout(&check);
    assert!(
        text.contains("config: ok") && text.contains("store: ok"),
        "{text}"
    );
    let key_id = keyring().current_id().to_owned();
    assert!(
        text.contains(&format!(
            "secrets: ok (SECRETS_KEY, key id {key_id}, 0 older keys"
        )),
        "{text}"
    );
    assert!(!text.contains(secrets_key()));
    assert!(cli(&app.database_url, &["migrate"]).status.success());
}

on_both_stores!(
    app = sample(),
    tenants_list_and_show_never_print_the_secret,
    token_mints_a_jwt_the_server_accepts,
    personal_data_report_runs_on_demand,
    check_and_migrate_report_a_healthy_store,
);

#[test]
fn check_fails_when_the_store_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = cli(
        &format!("postgres://postgres@127.0.0.1:{port}/none"),
        &["check"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("store: FAILED"));
}

#[test]
fn bad_configuration_and_usage_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let bad = Command::new(env!("CARGO_BIN_EXE_connect-axum"))
        .arg("check")
        .env("DATABASE_URL", &db)
        .env("PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid PORT"));
    assert_eq!(cli(&db, &["no-such-command"]).status.code(), Some(2));
    let help = cli(&db, &["--help"]);
    assert!(help.status.success());
    for command in [
        "serve",
        "migrate",
        "tenants",
        "token",
        "descriptor",
        "check",
    ] {
        assert!(stdout(&help).contains(command), "{command} in --help");
    }
}

#[test]
fn migrate_creates_the_embedded_store_and_descriptor_prints_the_rendered_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let db = format!("sqlite://{}", path.display());
    let migrate = cli(&db, &["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(path.exists());
    let descriptor = cli(&db, &["descriptor"]);
    assert!(descriptor.status.success());
    let json: serde_json::Value = serde_json::from_slice(&descriptor.stdout).unwrap();
    assert_eq!(json["baseUrl"], BASE_URL);
    assert_eq!(json["lifecycle"]["installed"], "/installed");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("logs.db").display());
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &db),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}/api/issues/PROJ-1/notes?jwt=secret.token.value",
            server.url
        ))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let (_, logs) = server.stop().await;
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"]["request_id"] == "req-42")
        .unwrap_or_else(|| panic!("no JSON line with the request id in:\n{logs}"));
    assert_eq!(line["fields"]["status"], 401);
    assert_eq!(line["span"]["path"], "/api/issues/PROJ-1/notes");
    assert!(
        !logs.contains("secret.token.value"),
        "a token reached the logs"
    );
}

#[test]
fn postgres_without_a_secrets_key_refuses_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_connect-axum"))
        .env("DATABASE_URL", admin_url())
        .env_remove("SECRETS_KEY")
        .env_remove("PORT")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid SECRETS_KEY: is required with a Postgres DATABASE_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_embedded_store_makes_a_key_file_once_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dev.db").display());
    let key_file = dir.path().join("dev.secrets.key");
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("SECRETS_KEY", ""),
        ("SECRETS_KEY_FILE", key_file.to_str().unwrap()),
        ("RUST_LOG", "info"),
    ];
    let (_, first) = ServerProcess::start(&env).await.stop().await;
    assert!(first.contains("generated a secrets key in"), "{first}");
    let key = std::fs::read_to_string(&key_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (_, second) = ServerProcess::start(&env).await.stop().await;
    assert!(second.contains("sealed with the key in"), "{second}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    assert!(!first.contains(key.trim()) && !second.contains(key.trim()));
}
