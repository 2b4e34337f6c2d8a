-- Tenants of either origin: a Connect install (keyed by its clientKey) or a Forge installation
-- (keyed by the installationId it was first installed with; installation_id follows the current
-- one). A Forge-born tenant's shared_secret is random and never accepted for a Connect JWT.
alter table tenant add column origin text not null default 'connect';
-- From verified invocation tokens: where product calls go, and the app version installed.
alter table tenant add column api_base_url text;
alter table tenant add column app_version text;
-- The permissions of the last avi:forge:upgraded:app event, as JSON.
alter table tenant add column forge_permissions text;

-- The app's system token per tenant, sealed like sharedSecrets (AAD: client key and purpose),
-- with its expiry: a token from a later call replaces it only when it lives at least as long.
create table forge_system_token (
    client_key text primary key references tenant (client_key) on delete cascade,
    token text not null,
    key_id text not null,
    api_base_url text not null,
    expires_at timestamptz not null,
    updated_at timestamptz not null
);

-- Forge trigger deliveries waiting for, or done by, the app's event handlers. id is the hash of
-- the delivery without its retryContext, so a redelivery finds its first copy.
create table forge_event (
    client_key text not null references tenant (client_key) on delete cascade,
    id text not null,
    event_type text not null,
    body text not null,
    attempts integer not null default 0,
    run_after timestamptz not null,
    last_error text,
    received_at timestamptz not null,
    done_at timestamptz,
    primary key (client_key, id)
);

create index forge_event_due on forge_event (run_after) where done_at is null;
create index forge_event_done on forge_event (done_at) where done_at is not null;

grant select, insert, update, delete on forge_system_token, forge_event to connect_axum_app;
