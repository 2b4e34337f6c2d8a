-- The embedded store serves one replica, whose own writes clear its tenant cache: nothing to announce.
select 1;
