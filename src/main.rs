use std::process::ExitCode;

use clap::Parser;
use connect_axum::app::{self, AppState};
use connect_axum::cli::{self, Cli, Command};
use connect_axum::config::Config;
use connect_axum::{monitoring, store, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match serve(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("connect-axum: {e:#}");
                ExitCode::FAILURE
            }
        },
        command => cli::run(command, config).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let _log_writer = telemetry::init(config.log_format);
    let store = store::connect(&config.store_options()?).await?;
    match store.reencrypt_secrets().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("sealed {n} sharedSecrets with the current secrets key"),
        Err(e) => tracing::error!(error = %e, "could not seal sharedSecrets with the current key"),
    }
    let listener = TcpListener::bind((config.bind, config.port)).await?;
    let metrics_listener = match config.metrics_port {
        Some(port) => Some(TcpListener::bind((config.metrics_bind, port)).await?),
        None => None,
    };
    tracing::info!(
        "connect-axum listening on {} (base URL {}, {} store)",
        listener.local_addr()?,
        config.base_url,
        if config.database_url.starts_with("sqlite:") {
            "embedded SQLite"
        } else {
            "Postgres"
        },
    );
    match &metrics_listener {
        Some(metrics) => tracing::info!("metrics at http://{}/metrics", metrics.local_addr()?),
        None if !config.metrics_on_public_port() => tracing::warn!(
            "GET /metrics is not served: set METRICS_PORT to serve it on an internal port, or \
             METRICS_TOKEN to serve it on this one behind a bearer token"
        ),
        None => {}
    }
    let header_read_timeout = config.header_read_timeout;
    let state = AppState::new(config, store.clone());
    state.spawn_upkeep();
    let mut listeners = vec![(listener, app::router(state.clone()))];
    if let Some(metrics) = metrics_listener {
        listeners.push((metrics, monitoring::router(state)));
    }
    app::serve(listeners, header_read_timeout, shutdown_signal()).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
