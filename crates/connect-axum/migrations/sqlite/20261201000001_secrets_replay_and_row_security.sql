-- sharedSecrets sealed at rest: the id of the sealing key (null: plain text written before sealing).
alter table tenant add column secret_key_id text;

-- The newest lifecycle token's iat, and every token applied while it may still be replayed: an
-- older or a replayed lifecycle hook is refused.
alter table tenant add column lifecycle_iat bigint;

create table lifecycle_token (
    client_key text not null references tenant (client_key) on delete cascade,
    token_id text not null,
    expires_at bigint not null,
    primary key (client_key, token_id)
);

create index lifecycle_token_expires_at on lifecycle_token (expires_at);

create index tenant_uninstalled_at on tenant (uninstalled_at) where uninstalled_at is not null;

-- SQLite has no row-level security: the embedded store serves one process, and every statement
-- on tenant data is scoped by the ClientKey the store API requires.
