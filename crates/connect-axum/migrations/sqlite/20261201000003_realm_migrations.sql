-- Data residency: each tenant's realm migration (one at a time).
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
