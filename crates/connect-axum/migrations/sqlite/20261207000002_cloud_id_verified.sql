-- Whether the tenant's cloud id came from a verified invocation token: a Connect install body's
-- cloud id is the installer's claim (the signed install covers iss, aud and qsh, not the body),
-- so only a verified one may lead a Forge installation or invocation to the tenant.
alter table tenant add column cloud_id_verified boolean not null default false;
update tenant set cloud_id_verified = true where origin = 'forge' and cloud_id is not null;
