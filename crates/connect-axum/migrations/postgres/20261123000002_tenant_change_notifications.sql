-- Every change to a tenant is announced, so each replica drops it from its tenant cache.
create function notify_tenant_changed() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        perform pg_notify('connect_axum_tenant', old.client_key);
    else
        perform pg_notify('connect_axum_tenant', new.client_key);
    end if;
    return null;
end
$$;

create trigger tenant_changed
    after insert or update or delete on tenant
    for each row execute function notify_tenant_changed();
