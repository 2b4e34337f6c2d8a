//! The command line: `serve` (the default), `migrate`, `tenants`, `token`, `descriptor`, `check`.
//!
//! Exit codes: 0 success, 1 a failure (store unreachable, a check failed), 2 bad usage or
//! configuration, 3 no such tenant.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::protocol::{jwt, qsh};
use crate::server::Builder;
use chrono::{DateTime, Utc};

use crate::store::{self, Installation, TenantRecord};

/// A backend for Atlassian Connect multitenant apps.
#[derive(Debug, Parser)]
#[command(name = "connect-axum", version, about)]
pub struct Cli {
    /// The command given; none means `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; configuration always comes from the environment (see the repository's
/// docs/operations/configuration.md).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Run the store's migrations (as MIGRATION_DATABASE_URL when set) and exit.
    Migrate,
    /// Inspect installed tenants (never shows a secret).
    Tenants {
        /// `list` or `show`.
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Mint a JWT as the tenant's product would, for trying routes locally.
    Token {
        /// The tenant's clientKey.
        client_key: String,
        /// The HTTP method the token is for, e.g. GET.
        method: String,
        /// The path and query the token is for, e.g. /api/issues/PROJ-1/notes.
        target: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 180)]
        exp: u64,
        /// The user's account id (`sub`).
        #[arg(long)]
        sub: Option<String>,
    },
    /// Manage the encryption of sharedSecrets at rest.
    Secrets {
        /// `rotate`.
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Personal data reporting (GDPR).
    PersonalData {
        /// `report`.
        #[command(subcommand)]
        command: PersonalDataCommand,
    },
    /// Print the descriptor as served at /atlassian-connect.json.
    Descriptor,
    /// Check the configuration and the store, reporting each item.
    Check,
}

/// `tenants` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// One line per tenant: clientKey, state, product, baseUrl, installed at.
    List,
    /// Everything stored about one tenant except its secret.
    Show {
        /// The tenant's clientKey.
        client_key: String,
    },
}

/// `secrets` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Seal every sharedSecret with the current SECRETS_KEY: after a key rotation (the old key
    /// in SECRETS_OLD_KEYS), or for secrets stored before encryption at rest. The server does
    /// the same at start-up.
    Rotate,
}

/// `personal-data` subcommands.
#[derive(Debug, Subcommand)]
pub enum PersonalDataCommand {
    /// Report the account ids of every tenant that is due now, and anonymise closed accounts
    /// (what the server does every ten minutes).
    Report,
}

/// Exit code of a configuration or usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the named tenant does not exist.
pub const EXIT_NO_TENANT: u8 = 3;

/// An app's `main`: parses the command line, reads the configuration from the environment, and
/// runs the command on the app `app` makes of it (serving by default, with logs set up).
///
/// ```no_run
/// use connect_axum::server::ConnectApp;
///
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     connect_axum::cli::main(|config| {
///         ConnectApp::builder(config).descriptor(r#"{"key": "my-app"}"#)
///     })
///     .await
/// }
/// ```
pub async fn main<S: Clone + Send + Sync + 'static>(
    app: impl FnOnce(Config) -> Builder<S>,
) -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    run(cli.command.unwrap_or(Command::Serve), app(config)).await
}

/// Runs `command` on `app`, printing to stdout and errors to stderr.
pub async fn run<S: Clone + Send + Sync + 'static>(command: Command, app: Builder<S>) -> ExitCode {
    let config = app.config().clone();
    match command {
        Command::Serve => {
            let _log_writer = crate::telemetry::init(config.server.log_format);
            let served = match app.build().await {
                Ok(server) => server.serve_until(crate::app::shutdown_signal()).await,
                Err(e) => Err(e),
            };
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failure(&format!("connect-axum: {e}")),
            }
        }
        Command::Descriptor => match app.rendered_descriptor() {
            Ok(descriptor) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(descriptor.json()).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(e) => failure(&format!("invalid descriptor: {e}")),
        },
        Command::Check => check(&app).await,
        Command::Migrate => match migrate(&app).await {
            Ok(()) => {
                println!("migrations applied to the {} store", backend_name(&config));
                ExitCode::SUCCESS
            }
            Err(e) => failure(&format!("could not migrate the store: {e:#}")),
        },
        Command::Secrets {
            command: SecretsCommand::Rotate,
        } => {
            let store = match open_store(&app).await {
                Ok(store) => store,
                Err(e) => return failure(&format!("could not open the store: {e:#}")),
            };
            match store.tenants().reencrypt_secrets().await {
                Ok(n) => {
                    println!("sealed {n} sharedSecrets again with the current key");
                    ExitCode::SUCCESS
                }
                Err(e) => failure(&format!("could not seal the secrets again: {e}")),
            }
        }
        Command::PersonalData {
            command: PersonalDataCommand::Report,
        } => {
            let store = match open_store(&app).await {
                Ok(store) => store,
                Err(e) => return failure(&format!("could not open the store: {e:#}")),
            };
            let state = match app.state_over(store) {
                Ok(state) => state,
                Err(e) => return failure(&format!("invalid descriptor: {e}")),
            };
            match crate::personal_data::report_due(&state).await {
                Ok(s) => {
                    println!(
                        "reported {} accounts of {} tenants: {} closed (anonymised), {} updated; {} tenants deferred",
                        s.accounts, s.tenants, s.closed, s.updated, s.deferred
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => failure(&format!("personal data reporting failed: {e}")),
            }
        }
        Command::Tenants { command } => {
            let store = match open_store(&app).await {
                Ok(store) => store,
                Err(e) => return failure(&format!("could not open the store: {e:#}")),
            };
            match command {
                TenantsCommand::List => match store.tenants().list().await {
                    Ok(tenants) => {
                        for t in tenants {
                            let i = &t.installation;
                            println!(
                                "{}\t{}\t{}\t{}\t{}",
                                i.client_key,
                                state(&t),
                                i.product_type.as_deref().unwrap_or("-"),
                                i.base_url,
                                t.installed_at.to_rfc3339()
                            );
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => failure(&format!("could not list tenants: {e}")),
                },
                TenantsCommand::Show { client_key } => {
                    match store.tenants().find(&client_key).await {
                        Ok(Some(t)) => {
                            println!("{}", describe(&t));
                            ExitCode::SUCCESS
                        }
                        Ok(None) => {
                            eprintln!("no tenant {client_key:?}");
                            ExitCode::from(EXIT_NO_TENANT)
                        }
                        Err(e) => failure(&format!("could not read the tenant: {e}")),
                    }
                }
            }
        }
        Command::Token {
            client_key,
            method,
            target,
            exp,
            sub,
        } => {
            let store = match open_store(&app).await {
                Ok(store) => store,
                Err(e) => return failure(&format!("could not open the store: {e:#}")),
            };
            match store.tenants().find(&client_key).await {
                Ok(Some(t)) => {
                    println!(
                        "{}",
                        mint(&config, &t, &method, &target, exp, sub.as_deref())
                    );
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!("no tenant {client_key:?}");
                    ExitCode::from(EXIT_NO_TENANT)
                }
                Err(e) => failure(&format!("could not read the tenant: {e}")),
            }
        }
    }
}

async fn open_store<S: Clone + Send + Sync + 'static>(
    app: &Builder<S>,
) -> Result<store::Store, crate::server::ServerError> {
    Ok(store::connect(&app.store_options()?).await?)
}

/// Runs the migrations alone: as `MIGRATION_DATABASE_URL`'s login when set, which is what lets
/// `connect_axum_app` exist before the serving login is made a member of it.
async fn migrate<S: Clone + Send + Sync + 'static>(
    app: &Builder<S>,
) -> Result<(), crate::server::ServerError> {
    Ok(store::migrate(&app.store_options()?).await?)
}

fn failure(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

fn backend_name(config: &Config) -> &'static str {
    match config.store.database_url.parse::<store::Backend>() {
        Ok(store::Backend::Postgres) => "Postgres",
        _ => "SQLite",
    }
}

fn state(t: &TenantRecord) -> &'static str {
    match (t.is_installed(), t.enabled) {
        (false, _) => "uninstalled",
        (true, true) => "enabled",
        (true, false) => "disabled",
    }
}

/// `tenants show`'s JSON of a tenant: its installation (without the sharedSecret) and state.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Described<'t> {
    #[serde(flatten)]
    installation: &'t Installation,
    state: &'static str,
    /// `connect` or `forge`: the door the tenant came in by.
    origin: &'static str,
    api_base_url: Option<&'t str>,
    app_version: Option<&'t str>,
    installed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    uninstalled_at: Option<DateTime<Utc>>,
}

/// The tenant as JSON, without its sharedSecret.
fn describe(t: &TenantRecord) -> String {
    let described = Described {
        installation: &t.installation,
        state: state(t),
        origin: match t.origin {
            crate::store::Origin::Connect => "connect",
            crate::store::Origin::Forge => "forge",
        },
        api_base_url: t.api_base_url.as_deref(),
        app_version: t.app_version.as_deref(),
        installed_at: t.installed_at,
        updated_at: t.updated_at,
        uninstalled_at: t.uninstalled_at,
    };
    // Through a `Value`, whose keys are sorted: the order `tenants show` has always printed.
    serde_json::to_value(described)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default()
}

/// A product-style JWT for `METHOD target`, relative to `BASE_URL`'s path.
fn mint(
    config: &Config,
    t: &TenantRecord,
    method: &str,
    target: &str,
    exp: u64,
    sub: Option<&str>,
) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({
        "iss": t.installation.client_key.as_str(),
        "iat": now,
        "exp": now + exp,
        "qsh": qsh::qsh(method, path, query, config.server.base_url.path()),
    });
    if let Some(sub) = sub {
        claims["sub"] = sub.into();
    }
    jwt::sign_hs256(&claims, t.installation.shared_secret.expose().as_bytes())
}

async fn check<S: Clone + Send + Sync + 'static>(app: &Builder<S>) -> ExitCode {
    let config = app.config();
    println!(
        "config: ok (base URL {}, listening on {}:{})",
        config.server.base_url, config.server.bind, config.server.port
    );
    match app.rendered_descriptor() {
        Ok(descriptor) => println!("descriptor: ok (key {})", descriptor.key()),
        Err(e) => return failure(&format!("descriptor: FAILED ({e})")),
    }
    match &config.store.secrets {
        Some(keys) => println!(
            "secrets: ok (SECRETS_KEY, key id {}, {} older keys for reading)",
            store::Keyring::new(keys.current(), keys.old()).current_id(),
            keys.old().len()
        ),
        None => println!(
            "secrets: ok (the embedded store's key file {})",
            config.store.secrets_key_file.display()
        ),
    }
    match open_store(app).await {
        Ok(store) => match store.ping().await {
            Ok(()) => {
                println!("store: ok ({}, migrations applied)", backend_name(config));
                ExitCode::SUCCESS
            }
            Err(e) => failure(&format!("store: FAILED ({e})")),
        },
        Err(e) => failure(&format!("store: FAILED ({e:#})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_show_prints_the_installation_and_state_but_never_the_secret() {
        let installation = Installation::for_tests("acme", "s3cret");
        let t = TenantRecord {
            installation,
            origin: crate::store::Origin::Connect,
            api_base_url: None,
            app_version: None,
            enabled: true,
            installed_at: Utc::now(),
            updated_at: Utc::now(),
            uninstalled_at: None,
        };
        let shown = describe(&t);
        assert!(!shown.contains("s3cret"));
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let keys: Vec<&str> = shown
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // The keys `tenants show` has always printed, which scripts may read, and the three of
        // the Forge door.
        assert_eq!(
            keys,
            [
                "apiBaseUrl",
                "appVersion",
                "baseUrl",
                "clientKey",
                "cloudId",
                "description",
                "displayUrl",
                "installationId",
                "installedAt",
                "key",
                "oauthClientId",
                "origin",
                "pluginsVersion",
                "productType",
                "serverVersion",
                "serviceEntitlementNumber",
                "state",
                "uninstalledAt",
                "updatedAt",
            ]
        );
        assert_eq!(shown["state"], "enabled");
    }
}
