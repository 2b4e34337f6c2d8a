//! The issue-notes server: `connect-axum serve` (the default), `migrate`, `tenants`, `token`,
//! `secrets`, `personal-data`, `descriptor`, `check`.

// Many small allocations per request (headers, JSON, rows) from two threads: measured in
// bench/profile.md, glibc's malloc took a tenth of the server's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let caps = match issue_notes::NoteCaps::from_env() {
        Ok(caps) => caps,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return std::process::ExitCode::from(connect_axum::cli::EXIT_USAGE);
        }
    };
    connect_axum::cli::main(move |config| issue_notes::app_with(config, caps)).await
}
