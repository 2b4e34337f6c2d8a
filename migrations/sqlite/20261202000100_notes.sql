-- The sample's notes. A database made before the sample's tables left the library's migrations
-- already has them: every statement here leaves those as they are.
create table if not exists note (
    id integer primary key autoincrement,
    client_key text not null references tenant (client_key) on delete cascade,
    issue_key text not null,
    body text not null,
    author text,
    created_at timestamp not null
);

create index if not exists note_client_key_issue_key on note (client_key, issue_key, id);

-- Where the sample keeps each tenant's data (no row: the realm it was installed in).
create table if not exists data_location (
    client_key text primary key references tenant (client_key) on delete cascade,
    location text not null
);
