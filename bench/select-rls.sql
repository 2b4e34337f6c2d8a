-- pgbench: the app's query for one request as the app runs it on Postgres: in a transaction under
-- row-level security, as connect_axum_app with app.client_key set (the app sends BEGIN and the
-- settings in one round trip; pgbench sends each statement on its own).
\set t random(0, :tenants - 1)
begin;
select set_config('role', 'connect_axum_app', true), set_config('app.client_key', 'bench-tenant-' || :t, true);
select id, issue_key, body, author, created_at from note where client_key = 'bench-tenant-' || :t and issue_key = 'PROJ-1' and id > 0 order by id limit 51;
commit;
