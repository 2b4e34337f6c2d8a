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

-- Row-level security: tenant data is read and written as connect_axum_app, a role that does not
-- bypass row security, with app.client_key set for the transaction; rows of any other tenant are
-- invisible to it. Roles belong to the whole cluster: another database may have made it already.
do $$
begin
    if not exists (select from pg_roles where rolname = 'connect_axum_app') then
        create role connect_axum_app nologin;
    end if;
exception when duplicate_object or unique_violation then null;
end
$$;

-- The connecting user switches to the role per transaction, so it must be a member.
do $$
begin
    if not pg_has_role(current_user, 'connect_axum_app', 'member') then
        execute format('grant connect_axum_app to %I', current_user);
    end if;
end
$$;

grant select, insert, update, delete on tenant, lifecycle_token to connect_axum_app;
