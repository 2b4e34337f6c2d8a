-- Note ids numbered per tenant, so that an id says nothing of how many notes other tenants write:
-- each tenant's last id is kept in note_sequence, whose row also serialises a tenant's inserts
-- (see src/store.rs). Existing notes keep their ids; a tenant's row starts from its largest id
-- when its first note after this migration is written.
alter table note alter column id drop identity if exists;

create table if not exists note_sequence (
    client_key text primary key references tenant (client_key) on delete cascade,
    last_id bigint not null
);

select connect_axum_tenant_table('note_sequence');
