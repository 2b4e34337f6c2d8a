-- Data residency: each tenant's realm migration (one at a time) and where the sample app keeps
-- the tenant's data (no row: the realm it was installed in).
create table realm_migration (
    client_key text primary key references tenant (client_key) on delete cascade,
    migration_id text not null,
    location text not null,
    previous_location text,
    state text not null,
    error_code text,
    start_time text,
    end_time text,
    updated_at timestamptz not null
);

create table data_location (
    client_key text primary key references tenant (client_key) on delete cascade,
    location text not null
);

grant select, insert, update, delete on realm_migration, data_location to connect_axum_app;

alter table data_location enable row level security;
alter table data_location force row level security;
create policy data_location_tenant_isolation on data_location
    using (client_key = current_setting('app.client_key', true))
    with check (client_key = current_setting('app.client_key', true));
