-- The iat of the invocation token that brought the stored system token: the newest one wins,
-- not the one that claims to live longest (a user's call could claim any lifetime).
alter table forge_system_token add column issued_at bigint;
