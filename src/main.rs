use std::process::ExitCode;

use clap::Parser;
use connect_axum::app;
use connect_axum::cli::{self, Cli, Command};
use connect_axum::config::Config;
use connect_axum::{notes, telemetry};

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
    notes::app(config)
        .build()
        .await?
        .serve_until(app::shutdown_signal())
        .await?;
    Ok(())
}
