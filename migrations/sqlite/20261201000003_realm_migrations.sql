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
    updated_at timestamp not null
);

create table data_location (
    client_key text primary key references tenant (client_key) on delete cascade,
    location text not null
);
