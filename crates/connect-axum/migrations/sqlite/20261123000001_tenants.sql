create table tenant (
    client_key text primary key,
    app_key text not null,
    shared_secret text not null,
    base_url text not null,
    display_url text,
    product_type text,
    description text,
    server_version text,
    plugins_version text,
    oauth_client_id text,
    service_entitlement_number text,
    cloud_id text,
    installation_id text,
    enabled boolean not null default true,
    installed_at timestamp not null,
    updated_at timestamp not null,
    uninstalled_at timestamp
);

create index tenant_cloud_id on tenant (cloud_id);
create index tenant_installation_id on tenant (installation_id);
