-- sharedSecrets sealed at rest: the id of the sealing key (null: plain text written before sealing).
alter table tenant add column secret_key_id text;

-- The newest lifecycle token applied to the tenant, so that a replayed or older one is refused.
alter table tenant add column lifecycle_iat bigint;
alter table tenant add column lifecycle_jti text;

create index tenant_uninstalled_at on tenant (uninstalled_at) where uninstalled_at is not null;

-- SQLite has no row-level security: the embedded store serves one process, and every statement
-- on tenant data is scoped by the ClientKey the store API requires.
