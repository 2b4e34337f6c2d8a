//! The state every handler reaches, and the layers that put a group of routes behind an
//! authentication. It sits below the features (lifecycle, residency, personal data, metrics), which
//! take it; it knows none of them.

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::middleware;

use crate::auth::container::{ContainerInvocation, InvocationContexts};
use crate::auth::forge::IsolatedClouds;
use crate::auth::{self, AuthMode, Authenticator, ForgeKeys, ForgeSettings, InstallKeys};
use crate::config::Config;
use crate::data::{AccountIdSource, RealmMover};
use crate::descriptor::Descriptor;
use crate::error::Error;
use crate::forge::events::AsyncEvents;
use crate::forge::impersonation::{ImpersonationTarget, OfflineUserTokens};
use crate::forge::sql::{ForgeSql, Sql, SqlMigrations};
use crate::forge::storage::ForgeStorage;
use crate::monitoring;
use crate::outbound::Transport;
use crate::product::ProductClient;
use crate::protocol::ForgeToken;
use crate::protocol::egress::ProxyAuthorization;
use crate::slots::{self, Slots};
use crate::store::Store;
use crate::store::{ClientKey, StoredSystemToken};

pub mod forge_events;

pub use forge_events::{ForgeEvent, ForgeEventHandler, ForgeEvents, HandlerError};

/// What every handler can reach: the configuration, the store, the descriptor and the clients
/// of the product and of Forge, through its accessors.
#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Store,
    pub(crate) auth: Authenticator,
    pub(crate) descriptor: Arc<Descriptor>,
    pub(crate) product: ProductClient,
    pub(crate) realm_mover: Arc<dyn RealmMover>,
    pub(crate) account_ids: Arc<[Arc<dyn AccountIdSource>]>,
    pub(crate) forge_events: forge_events::ForgeEvents,
    pub(crate) forge_storage: ForgeStorage,
    pub(crate) forge_users: OfflineUserTokens,
    pub(crate) forge_sql: Option<ForgeSql>,
    pub(crate) sql_migrations: SqlMigrations,
    pub(crate) async_events: Option<AsyncEvents>,
}

/// How long a Forge SQL call may take: above Forge's own limits (DDL stops at 20 s).
pub const FORGE_SQL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(25);

impl AppState {
    /// The configuration the server started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store: tenants, the app's tenant transactions, the library's bookkeeping.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The authenticator every route group's check runs on.
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The descriptor the app serves; its key is the app key.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Calls into a tenant's product, as the app or as a user.
    pub fn product(&self) -> &ProductClient {
        &self.product
    }

    /// Moves a tenant's data between realms when Atlassian migrates it (data residency);
    /// [`NothingToMove`](crate::data::NothingToMove) unless the app gives one.
    pub fn realm_mover(&self) -> &dyn RealmMover {
        &*self.realm_mover
    }

    /// Where the app keeps Atlassian account ids, for personal data reporting.
    pub fn account_ids(&self) -> &[Arc<dyn AccountIdSource>] {
        &self.account_ids
    }

    /// The app's Forge event handlers, run from the durable queue.
    pub fn forge_events(&self) -> &ForgeEvents {
        &self.forge_events
    }

    /// Forge hosted storage, for a Forge tenant's system token.
    pub fn forge_storage(&self) -> &ForgeStorage {
        &self.forge_storage
    }

    /// Offline user tokens, fetched with a tenant's stored system token.
    pub fn forge_users(&self) -> &OfflineUserTokens {
        &self.forge_users
    }

    /// Forge SQL, when the app runs as a Forge Container; `None` elsewhere.
    pub fn forge_sql(&self) -> Option<&ForgeSql> {
        self.forge_sql.as_ref()
    }

    /// Forge's async events, when the app runs as a Forge Container; `None` elsewhere.
    pub fn async_events(&self) -> Option<&AsyncEvents> {
        self.async_events.as_ref()
    }

    /// The app's Forge SQL migrations (none unless the builder was given them).
    pub fn sql_migrations(&self) -> &SqlMigrations {
        &self.sql_migrations
    }

    /// The Forge SQL database of the invocation's installation, brought up to date with the
    /// app's migrations first (checked once per installation and process).
    ///
    /// # Errors
    /// 500 `not_in_container` outside a Forge Container; the migration that failed.
    pub async fn sql_in(&self, invocation: &ContainerInvocation) -> Result<Sql<'_>, Error> {
        self.sql_at(
            &invocation.context.app.installation_id,
            &invocation.proxy_authorization,
        )
        .await
    }

    /// The Forge SQL database of `installation_id` reached as the app, outside an invocation
    /// (an event handler, a job), brought up to date as [`sql_in`](Self::sql_in) does.
    ///
    /// # Errors
    /// As [`sql_in`](Self::sql_in); 400 `invalid_installation` for an id the egress header
    /// cannot carry.
    pub async fn sql_of(&self, installation_id: &str) -> Result<Sql<'_>, Error> {
        let authorization = ProxyAuthorization::installation_as_app(installation_id)
            .map_err(|_| Error::bad_request("invalid_installation", "not an installation id"))?;
        self.sql_at(installation_id, &authorization).await
    }

    async fn sql_at(
        &self,
        installation_id: &str,
        authorization: &ProxyAuthorization,
    ) -> Result<Sql<'_>, Error> {
        let forge_sql = self.forge_sql.as_ref().ok_or_else(|| Error::Upstream {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            reason: "not_in_container",
            message: "Forge SQL is reached only from a Forge Container".to_owned(),
        })?;
        let sql = forge_sql.at(authorization);
        self.sql_migrations.ensure(installation_id, &sql).await?;
        Ok(sql)
    }
}

impl AppState {
    /// Wires the state for `config` over `store`, serving the app's `descriptor` (its key is the
    /// app key tokens are checked against and product calls are signed with).
    pub fn with_descriptor(config: Config, store: Store, descriptor: Descriptor) -> Self {
        Self::wire(config, store, descriptor, &[])
    }

    /// [`with_descriptor`](Self::with_descriptor) whose calls, in a Forge Container, may reach
    /// `egress_hosts` beside Forge's own APIs.
    pub(crate) fn wire(
        config: Config,
        store: Store,
        descriptor: Descriptor,
        egress_hosts: &[String],
    ) -> Self {
        monitoring::handle();
        let install_keys = InstallKeys::new(
            &config.connect.install_keys_url,
            config.connect.install_keys_timeout,
        );
        let auth = Authenticator::new(
            store.clone(),
            descriptor.key().to_owned(),
            &config.server.base_url,
            config.connect.jwt_leeway,
            config.connect.max_token_lifetime,
            config.server.max_body_bytes,
            install_keys,
        )
        .with_rate_limit(config.server.tenant_rate_limit)
        .with_write_rate_limit(config.server.tenant_write_rate_limit)
        .with_body_read_timeout(config.server.body_read_timeout)
        .with_session_max_lifetime(config.connect.session_max_lifetime)
        .with_slots(Slots::new(
            config.server.max_concurrent_requests,
            config.server.max_anonymous_requests,
            config.server.max_concurrent_requests_per_tenant,
        ));
        let auth = match &config.forge.app_ari {
            Some(app_ari) => auth.with_forge(ForgeSettings {
                app_ari: app_ari.clone(),
                keys: ForgeKeys::new(
                    &config.forge.jwks_url,
                    config.forge.jwks_refresh,
                    config.connect.install_keys_timeout,
                ),
                staging_keys: config.forge.staging_jwks_url.as_ref().map(|url| {
                    ForgeKeys::new(
                        url,
                        config.forge.jwks_refresh,
                        config.connect.install_keys_timeout,
                    )
                }),
                isolated_clouds: config.forge.ic_jwks_template.as_deref().and_then(|t| {
                    IsolatedClouds::new(
                        t,
                        config.forge.jwks_refresh,
                        config.connect.install_keys_timeout,
                    )
                    .ok()
                }),
            }),
            None => auth,
        };
        // Built here, not by each client, so that what starts the server decides how calls leave.
        let transport = match &config.container {
            Some(container) => Transport::through_proxy(
                config.connect.product_timeout,
                &container.egress_proxy_url,
                egress_hosts,
            ),
            None => Transport::new(config.connect.product_timeout),
        };
        let auth = match &config.container {
            Some(container) => auth.with_container(InvocationContexts::new(
                transport.clone(),
                &container.egress_proxy_url,
            )),
            None => auth,
        };
        let product = ProductClient::with_transport(
            transport.clone(),
            descriptor.key(),
            &config.connect.oauth_auth_server_url,
        );
        // A container's storage calls go to the egress proxy, under the same paths.
        let storage_base = match &config.container {
            Some(container) => &container.egress_proxy_url,
            None => &config.forge.api_base_url,
        };
        let forge_storage = ForgeStorage::with_transport(transport.clone(), storage_base);
        let forge_sql = config.container.as_ref().map(|container| {
            ForgeSql::with_transport(
                Transport::through_proxy(FORGE_SQL_TIMEOUT, &container.egress_proxy_url, &[]),
                &container.egress_proxy_url,
            )
        });
        let async_events = config.container.as_ref().map(|container| {
            AsyncEvents::with_transport(transport.clone(), &container.egress_proxy_url)
        });
        let forge_users = OfflineUserTokens::with_transport(
            transport,
            &config.forge.graphql_url,
            &config.forge.impersonation_context_id,
        );
        Self {
            config: Arc::new(config),
            store,
            auth,
            descriptor: Arc::new(descriptor),
            product,
            realm_mover: crate::data::default_mover(),
            account_ids: Arc::new([]),
            forge_events: forge_events::ForgeEvents::default(),
            forge_storage,
            forge_users,
            forge_sql,
            sql_migrations: SqlMigrations::new(),
            async_events,
        }
    }
}

impl AppState {
    /// `routes` behind the JWT check of mode `M` (see [`auth::require_jwt`]): their handlers take
    /// the verified [`Tenant`](crate::auth::Tenant).
    pub fn with_jwt<M: AuthMode, S: Clone + Send + Sync + 'static>(
        &self,
        routes: Router<S>,
    ) -> Router<S> {
        routes.route_layer(middleware::from_fn_with_state(
            self.auth.clone(),
            auth::require_jwt::<M>,
        ))
    }

    /// `routes` behind a Forge Invocation Token (see [`auth::require_forge`]), or, when the app
    /// runs as a Forge Container, behind the sidecar's invocation (see
    /// [`auth::container::require_container`]).
    pub fn with_forge<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        let routes = if self.auth.is_container() {
            routes.route_layer(middleware::from_fn_with_state(
                self.auth.clone(),
                auth::container::require_container,
            ))
        } else {
            routes.route_layer(middleware::from_fn_with_state(
                self.auth.clone(),
                auth::require_forge,
            ))
        };
        // Outside the token check: a browser's preflight carries no token. The 405 answer is
        // set first so that the layer covers it (the router sets its own only where none is).
        match crate::cors::forge_layer(&self.config.forge.cors_origins) {
            Some(cors) => routes
                .method_not_allowed_fallback(crate::error::method_not_allowed)
                .layer(cors),
            None => routes,
        }
    }

    /// `routes` behind a Forge Invocation Token of Forge's own calls as the app, of the module
    /// keys `module_keys` (any endpoint module when empty): for the routes an app's triggers,
    /// scheduled triggers or other app-level calls reach. A user's UI call can name any path of
    /// the remote, so such routes must refuse it (403 `user_invocation`, see
    /// [`auth::forge::require_app_invocation`]).
    pub fn with_forge_app<S: Clone + Send + Sync + 'static>(
        &self,
        module_keys: &[String],
        routes: Router<S>,
    ) -> Router<S> {
        let keys: std::sync::Arc<[String]> = module_keys.into();
        let routes = if self.auth.is_container() {
            routes.route_layer(middleware::from_fn_with_state(
                keys,
                auth::container::require_app_invocation,
            ))
        } else {
            routes.route_layer(middleware::from_fn_with_state(
                keys,
                auth::forge::require_app_invocation,
            ))
        };
        self.with_forge(routes)
    }

    /// Public `routes` (no authentication), each request within the anonymous slots.
    pub fn public<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        routes.route_layer(middleware::from_fn_with_state(
            self.auth.slots().clone(),
            slots::anonymous,
        ))
    }
}

impl AppState {
    /// The tenant's stored system token, if it is still usable: for product calls as the app, Forge
    /// storage and offline impersonation outside any request.
    ///
    /// # Errors
    /// `system_token_unavailable` (503) when none is stored or it has expired.
    pub async fn system_token(&self, key: &ClientKey) -> Result<StoredSystemToken, Error> {
        let stored = self.store.forge().system_token(key).await?;
        Ok(crate::product::usable_system_token(stored)?)
    }

    /// An offline token of the user `account_id` on the Forge tenant `key` (Forge's
    /// `offlineUserAuthToken`, with the tenant's stored system token), kept until shortly before
    /// it expires and fetched once at a time per user; call the product with it through
    /// [`ProductClient::with_forge_token`].
    ///
    /// # Errors
    /// `system_token_unavailable` when no usable system token is stored; `not_forge_tenant`
    /// (400) when the tenant has no installation id, cloud id or product; the refusals of
    /// [`OfflineUserTokens::token`].
    pub async fn offline_user_token(
        &self,
        key: &ClientKey,
        account_id: &str,
    ) -> Result<(ForgeToken, String), Error> {
        let system = self.system_token(key).await?;
        let record = self
            .store
            .tenants()
            .find(key.as_str())
            .await?
            .ok_or(Error::NotFound)?;
        let installation = &record.installation;
        let (Some(installation_id), Some(cloud_id), Some(product)) = (
            installation.installation_id.as_deref(),
            installation.cloud_id.as_deref(),
            installation.product_type.as_deref(),
        ) else {
            return Err(Error::bad_request(
                "not_forge_tenant",
                "the tenant has no Forge installation to impersonate a user on",
            ));
        };
        let target = ImpersonationTarget {
            installation_id,
            cloud_id,
            product,
        };
        let token = self
            .forge_users
            .token(&system.token, &target, account_id)
            .await?;
        Ok((token, system.api_base_url))
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
