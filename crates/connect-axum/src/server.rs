//! The composition API: an app hands the library its descriptor, its migrations and its routes
//! (each group with its authentication), and gets one server whose every route, the library's or
//! the app's, is under one middleware stack.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use connect_axum::app::{self, AppState};
//! use connect_axum::auth::{ContextJwt, Tenant};
//! use connect_axum::config::Config;
//! use connect_axum::server::ConnectApp;
//!
//! async fn hello(tenant: Tenant) -> String {
//!     format!("hello, {}", tenant.client_key())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! ConnectApp::builder(Config::from_env()?)
//!     .descriptor(r#"{"key": "my-app", "name": "My app", "authentication": {"type": "jwt"}}"#)
//!     .routes::<ContextJwt>(Router::new().route("/api/hello", get(hello)))
//!     .build()
//!     .await?
//!     .serve_until(app::shutdown_signal())
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::app;
use crate::auth::AuthMode;
use crate::config::{Config, KeyFileError};
use crate::data::{AccountIdSource, RealmMover};
use crate::descriptor::{Descriptor, DescriptorError};
use crate::forge::sql::SqlMigrations;
use crate::monitoring;
use crate::state::AppState;
use crate::state::{ForgeEventHandler, ForgeEvents};
use crate::store::{AppMigrations, Store, StoreError, StoreOptions};

/// Why a server could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The app gave no descriptor, or one that is not a JSON object with a string `key`.
    #[error("invalid descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    /// The embedded store's secrets key file (`SECRETS_KEY_FILE`) could not be read or made.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not bind `BIND`:`PORT`, or serving failed.
    #[error("could not listen: {0}")]
    Listen(#[from] std::io::Error),
}

type Routes<S> = Box<dyn FnOnce(&AppState) -> Router<S> + Send>;
type MakeState<S> = Box<dyn FnOnce(&AppState) -> S + Send>;

/// Collects what an app adds to the library; see [`ConnectApp::builder`].
///
/// `S` is the state of the app's routes: [`AppState`] itself, or the app's own state made from it
/// by [`with_state`](Builder::with_state), from which handlers extract `State<AppState>` (or any
/// part of it) through axum's `FromRef`.
pub struct Builder<S = AppState> {
    config: Config,
    descriptor: Option<String>,
    migrations: AppMigrations,
    routes: Vec<Routes<S>>,
    store: Option<Store>,
    realm_mover: Option<Arc<dyn RealmMover>>,
    account_ids: Vec<Arc<dyn AccountIdSource>>,
    forge_handlers: Vec<Arc<dyn ForgeEventHandler>>,
    egress_hosts: Vec<String>,
    sql_migrations: SqlMigrations,
    make_state: MakeState<S>,
}

impl Builder<AppState> {
    /// The state of the app's routes, made from the library's once it is wired; implement
    /// `FromRef<S> for AppState` so the library's extractors find theirs in it. Routes added before
    /// keep the library's state.
    pub fn with_state<S: Clone + Send + Sync + 'static>(
        self,
        make: impl FnOnce(&AppState) -> S + Send + 'static,
    ) -> Builder<S> {
        let routes = self
            .routes
            .into_iter()
            .map(|routes| -> Routes<S> {
                Box::new(move |state: &AppState| routes(state).with_state(state.clone()))
            })
            .collect();
        Builder {
            config: self.config,
            descriptor: self.descriptor,
            migrations: self.migrations,
            routes,
            store: self.store,
            realm_mover: self.realm_mover,
            account_ids: self.account_ids,
            forge_handlers: self.forge_handlers,
            egress_hosts: self.egress_hosts,
            sql_migrations: self.sql_migrations,
            make_state: Box::new(make),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Builder<S> {
    /// The app's `atlassian-connect.json`, served with `baseUrl` = `BASE_URL`; its `key` is the
    /// app key tokens are checked against and product calls are signed with. Required.
    pub fn descriptor(mut self, json: &str) -> Self {
        self.descriptor = Some(json.to_owned());
        self
    }

    /// The app's Forge SQL migrations, applied in a Forge Container to each installation's
    /// database on its first use ([`AppState::sql_in`]) and by a sweep over the installations
    /// after the start.
    pub fn sql_migrations(mut self, migrations: SqlMigrations) -> Self {
        self.sql_migrations = migrations;
        self
    }

    /// The app's own migrations and tenant tables, run with the library's as one set.
    pub fn migrations(mut self, migrations: AppMigrations) -> Self {
        self.migrations = migrations;
        self
    }

    /// Moves the app's data between realms when Atlassian migrates a tenant (data residency);
    /// [`NothingToMove`](crate::residency::NothingToMove) by default.
    pub fn realm_mover(mut self, mover: impl RealmMover) -> Self {
        self.realm_mover = Some(Arc::new(mover));
        self
    }

    /// A place where the app keeps Atlassian account ids, reported to Atlassian's personal data
    /// API and anonymised when an account closes; one call per place.
    pub fn account_ids(mut self, source: impl AccountIdSource) -> Self {
        self.account_ids.push(Arc::new(source));
        self
    }

    /// `routes` behind the JWT check of mode `M`; their handlers take the verified `Tenant`.
    pub fn routes<M: AuthMode>(self, routes: Router<S>) -> Self {
        self.routes_with(move |state| state.with_jwt::<M, S>(routes))
    }

    /// The external hosts the app calls, as its Forge manifest declares them
    /// (`permissions.external.fetch.backend`: `api.example.com`, `*.example.com` or a URL). In a
    /// Forge Container every call leaves through Forge's egress proxy, and one to a host neither
    /// Forge's nor declared here fails before it is sent (`EgressRefused`); elsewhere the list is
    /// not used.
    pub fn egress_hosts<H: Into<String>>(mut self, hosts: impl IntoIterator<Item = H>) -> Self {
        self.egress_hosts.extend(hosts.into_iter().map(Into::into));
        self
    }

    /// Adds a handler of Forge events (product events the manifest's triggers send, lifecycle
    /// events, scheduled triggers, preUninstall), run by the server's worker from the durable
    /// queue after the delivery was answered.
    pub fn forge_events(mut self, handler: impl ForgeEventHandler) -> Self {
        self.forge_handlers.push(Arc::new(handler));
        self
    }

    /// `routes` behind a Forge Invocation Token.
    pub fn forge_routes(self, routes: Router<S>) -> Self {
        self.routes_with(move |state| state.with_forge(routes))
    }

    /// Public `routes`: no authentication, within the anonymous slots.
    pub fn public_routes(self, routes: Router<S>) -> Self {
        self.routes_with(move |state| state.public(routes))
    }

    /// Routes made from the state (already layered with their authentication).
    pub fn routes_with(
        mut self,
        routes: impl FnOnce(&AppState) -> Router<S> + Send + 'static,
    ) -> Self {
        self.routes.push(Box::new(routes));
        self
    }

    /// Serves over `store` instead of opening the configured one (tests, or a store shared with
    /// something else); the app's migrations are then the caller's to have run.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The configuration the server is built for.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The app's descriptor as this configuration serves it.
    ///
    /// # Errors
    /// No descriptor was given, or it is not a JSON object with a string `key`.
    pub fn rendered_descriptor(&self) -> Result<Descriptor, DescriptorError> {
        let json = self.descriptor.as_deref().ok_or(DescriptorError::Missing)?;
        Descriptor::from_json(json, &self.config)
    }

    /// How the store is reached, with the app's migrations.
    ///
    /// # Errors
    /// The embedded store's key file cannot be read or made.
    pub fn store_options(&self) -> Result<StoreOptions, KeyFileError> {
        let mut options = StoreOptions::from_config(&self.config.store)?;
        options.app_migrations = self.migrations.clone();
        Ok(options)
    }

    /// The state the library's handlers share, over `store`.
    ///
    /// # Errors
    /// No descriptor was given, or it is invalid.
    pub fn state_over(&self, store: Store) -> Result<AppState, DescriptorError> {
        Ok(self.state_with(store, self.rendered_descriptor()?))
    }

    fn state_with(&self, store: Store, descriptor: Descriptor) -> AppState {
        let mut state = AppState::wire(self.config.clone(), store, descriptor, &self.egress_hosts);
        if let Some(mover) = &self.realm_mover {
            state.realm_mover = mover.clone();
        }
        state.account_ids = self.account_ids.clone().into();
        state.forge_events = ForgeEvents::new(self.forge_handlers.clone());
        state.sql_migrations = self.sql_migrations.clone();
        state
    }

    /// Opens the store (running the migrations) unless one was given, seals sharedSecrets not
    /// under the current key, and wires the state and the router.
    ///
    /// # Errors
    /// An invalid descriptor, or a store that cannot be opened.
    pub async fn build(self) -> Result<ConnectApp, ServerError> {
        // Before the store: an invalid descriptor runs no migration.
        let descriptor = self.rendered_descriptor()?;
        let store = match self.store.clone() {
            Some(store) => store,
            None => {
                let store = crate::store::connect(&self.store_options()?).await?;
                match store.tenants().reencrypt_secrets().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!("sealed {n} sharedSecrets with the current secrets key")
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "could not seal sharedSecrets with the current key"
                    ),
                }
                store
            }
        };
        let state = self.state_with(store, descriptor);
        let app_state = (self.make_state)(&state);
        let routes: Router<AppState> = self
            .routes
            .into_iter()
            .fold(Router::new(), |all, routes| all.merge(routes(&state)))
            .with_state(app_state);
        let router = app::router_with(state.clone(), routes);
        Ok(ConnectApp { state, router })
    }
}

/// A built server: its state and its whole router.
pub struct ConnectApp {
    state: AppState,
    router: Router,
}

impl ConnectApp {
    /// Starts collecting an app for `config`.
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            descriptor: None,
            migrations: AppMigrations::default(),
            routes: Vec::new(),
            store: None,
            realm_mover: None,
            account_ids: Vec::new(),
            forge_handlers: Vec::new(),
            egress_hosts: Vec::new(),
            sql_migrations: SqlMigrations::new(),
            make_state: Box::new(AppState::clone),
        }
    }

    /// The state every handler reaches.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Every route under the middleware stack, e.g. to drive in tests.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Listens on `PORT` (and `METRICS_PORT` when set), starts the upkeep (retention purge,
    /// personal data reporting), and serves until `shutdown` completes; then closes the store.
    ///
    /// # Errors
    /// When a port cannot be bound.
    pub async fn serve_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let config = self.state.config.clone();
        let listener = TcpListener::bind((config.server.bind, config.server.port)).await?;
        let metrics_listener = match config.metrics.port {
            Some(port) => Some(TcpListener::bind((config.metrics.bind, port)).await?),
            None => None,
        };
        tracing::info!(
            "connect-axum listening on {} (base URL {}, {} store)",
            listener.local_addr()?,
            config.server.base_url,
            if config.store.database_url.starts_with("sqlite:") {
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
        crate::retention::spawn(
            self.state.store.clone(),
            config.compliance.uninstall_retention,
            config.compliance.purge_interval,
        );
        crate::personal_data::spawn(self.state.clone());
        if config.forge.app_ari.is_some() {
            crate::ops::forge_queue::spawn(self.state.clone());
        }
        crate::ops::sql_sweep::spawn(self.state.clone());
        let mut listeners = vec![(listener, self.router)];
        if let Some(metrics) = metrics_listener {
            listeners.push((metrics, monitoring::endpoint::router(self.state.clone())));
        }
        app::serve(listeners, config.server.header_read_timeout, shutdown).await;
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
