-- Sets the tenant of the transaction that the same message began: a tenant transaction's BEGIN
-- and its key travel together, so a transaction begun by an earlier message (one left open by a
-- request that was cancelled) means the connection is not clean, and nothing may run in it.
create function connect_axum_enter_tenant(key text) returns void language plpgsql as $$
begin
    if transaction_timestamp() <> statement_timestamp() then
        raise exception 'a tenant transaction must begin in the message that sets its tenant'
            using errcode = '25001';
    end if;
    perform set_config('app.client_key', key, true);
end $$;
