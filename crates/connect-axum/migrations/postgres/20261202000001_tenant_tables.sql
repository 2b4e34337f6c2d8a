-- `select connect_axum_tenant_table('my_table');` in an app's migration puts its table, which must
-- have a client_key column, under the row-level security of the library's own tenant data: the
-- serving role may read and write it (and use its sequences), and only the rows of the tenant
-- whose transaction it is. Running it again changes nothing.
create function connect_axum_tenant_table(tab regclass) returns void language plpgsql as $$
declare
    seq regclass;
    policy text := (select relname from pg_class where oid = tab) || '_tenant_isolation';
begin
    if not exists (
        select from pg_attribute where attrelid = tab and attname = 'client_key' and not attisdropped
    ) then
        raise exception 'table % has no client_key column', tab;
    end if;
    execute format('grant select, insert, update, delete on %s to connect_axum_app', tab);
    for seq in
        select d.objid::regclass from pg_depend d join pg_class c on c.oid = d.objid
        where d.refobjid = tab and d.classid = 'pg_class'::regclass and c.relkind = 'S'
    loop
        execute format('grant usage on sequence %s to connect_axum_app', seq);
    end loop;
    execute format('alter table %s enable row level security', tab);
    execute format('alter table %s force row level security', tab);
    if not exists (select from pg_policy where polrelid = tab and polname = policy) then
        execute format(
            'create policy %I on %s '
            'using (client_key = current_setting(''app.client_key'', true)) '
            'with check (client_key = current_setting(''app.client_key'', true))',
            policy, tab
        );
    end if;
end
$$;
