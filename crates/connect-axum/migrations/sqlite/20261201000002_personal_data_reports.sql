-- When each tenant's stored account ids were last reported to Atlassian's personal data
-- reporting API, and when they are next due: a restart resumes where the last run stopped.
create table personal_data_report (
    client_key text primary key references tenant (client_key) on delete cascade,
    last_reported_at timestamp,
    next_due_at timestamp not null
);
