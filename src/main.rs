//! The issue-notes server: `connect-axum serve` (the default), `migrate`, `tenants`, `token`,
//! `secrets`, `personal-data`, `descriptor`, `check`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    connect_axum::cli::main(issue_notes::app).await
}
