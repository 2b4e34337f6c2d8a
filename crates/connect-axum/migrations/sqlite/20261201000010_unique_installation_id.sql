-- A Forge installation id belongs to at most one installed tenant: the install payload is not
-- covered by the signed install, so a second tenant could otherwise claim another's id. Where
-- installed tenants already share one, the earliest installed keeps it.
update tenant set installation_id = null
where uninstalled_at is null and installation_id is not null and exists (
    select 1 from tenant earlier
    where earlier.installation_id = tenant.installation_id
      and earlier.uninstalled_at is null
      and (earlier.installed_at < tenant.installed_at
           or (earlier.installed_at = tenant.installed_at and earlier.client_key < tenant.client_key))
);

drop index if exists tenant_installation_id;
create unique index tenant_installation_id_installed on tenant (installation_id)
    where installation_id is not null and uninstalled_at is null;
