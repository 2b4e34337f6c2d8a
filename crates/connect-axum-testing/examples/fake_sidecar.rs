//! The testing kit's Forge sidecar as a process, for a benchmark or a manual run of an app in
//! container mode: serves `/invocation/context`, Forge storage and Forge SQL (over MariaDB at
//! 127.0.0.1:3306) on a loopback port, makes `--installations N` installations with one user
//! invocation each, prints its URL (the app's `FORGE_EGRESS_PROXY_URL`) on the first line of
//! stdout and writes the invocation ids to `--ids FILE`, one a line; stops on SIGTERM or SIGINT,
//! dropping the databases it made.
//!
//! ```text
//! cargo run -p connect-axum-testing --example fake-sidecar -- --installations 10 --ids ids.txt
//! ```

use std::io::Write as _;

use connect_axum_testing::FakeSidecar;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() {
    let mut installations = 10usize;
    let mut ids_file = String::from("ids.txt");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--installations" => {
                installations = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--installations N")
            }
            "--ids" => ids_file = args.next().expect("--ids FILE"),
            other => panic!("unknown argument {other}"),
        }
    }
    let sidecar = FakeSidecar::start().await;
    let ids: Vec<String> = (0..installations)
        .map(|n| {
            let site = sidecar.site(&format!("site-{n}"));
            sidecar.invocation(FakeSidecar::user_context(
                &site,
                &format!("557058:user-{n}"),
                "PROJ-1",
            ))
        })
        .collect();
    std::fs::write(&ids_file, ids.join("\n") + "\n").expect("the ids file is written");
    println!("{}", sidecar.url);
    std::io::stdout().flush().expect("stdout");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    sidecar.sql().cleanup().await;
}
