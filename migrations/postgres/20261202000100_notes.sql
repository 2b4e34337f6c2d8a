-- The sample's notes, under row-level security. A database made before the sample's tables left
-- the library's migrations already has them: every statement here leaves those as they are.
create table if not exists note (
    client_key text not null references tenant (client_key) on delete cascade,
    id bigint generated always as identity,
    issue_key text not null,
    body text not null,
    author text,
    created_at timestamptz not null,
    primary key (client_key, id)
);

create index if not exists note_client_key_issue_key on note (client_key, issue_key, id);

select connect_axum_tenant_table('note');

-- Where the sample keeps each tenant's data (no row: the realm it was installed in).
create table if not exists data_location (
    client_key text primary key references tenant (client_key) on delete cascade,
    location text not null
);

select connect_axum_tenant_table('data_location');
