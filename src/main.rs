//! The issue-notes server: `connect-axum serve` (the default), `migrate`, `tenants`, `token`,
//! `secrets`, `personal-data`, `descriptor`, `check`.

// Many small allocations per request (headers, JSON, rows) from two threads: measured in
// bench/profile.md, glibc's malloc took a tenth of the server's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    connect_axum::cli::main(issue_notes::app).await
}
