-- pgbench: the app's query for one request, for a random tenant (pgbench -D tenants=N).
\set t random(0, :tenants - 1)
select id, issue_key, body, author, created_at from note where client_key = 'bench-tenant-' || :t and issue_key = 'PROJ-1' and id > 0 order by id limit 51;
