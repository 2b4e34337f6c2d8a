-- Note ids numbered per tenant, so that an id says nothing of how many notes other tenants write:
-- each tenant's last id is kept in note_sequence, whose row also serialises a tenant's inserts
-- (see src/store.rs). Existing notes keep their ids. SQLite cannot change a primary key: the
-- table is made again, keyed by (client_key, id).
create table note_by_tenant (
    client_key text not null references tenant (client_key) on delete cascade,
    id integer not null,
    issue_key text not null,
    body text not null,
    author text,
    created_at timestamp not null,
    primary key (client_key, id)
);

insert into note_by_tenant (client_key, id, issue_key, body, author, created_at)
select client_key, id, issue_key, body, author, created_at from note;

drop table note;

alter table note_by_tenant rename to note;

create index note_client_key_issue_key on note (client_key, issue_key, id);

create table note_sequence (
    client_key text primary key references tenant (client_key) on delete cascade,
    last_id integer not null
);
