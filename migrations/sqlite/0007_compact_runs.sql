-- Run records in compact form: ids as 16-byte blobs instead of 36 characters
-- of text, times as integer microseconds since the epoch instead of 27
-- characters (about 130 bytes a row instead of 330, and 40 bytes an index
-- entry instead of 100). A run is written once per invocation on the hot
-- path, and the single SQLite writer pays for every byte: with
-- PICLOUD_RUNS=all the dispatcher kept 76% of its throughput without runs,
-- and keeps 82% with this form (`bench dispatch --events 100000 --runs off,all,...`).
-- The host binds these columns in this form (`store::sql::Compact`); its
-- id and time types decode from either form. PostgreSQL stores `uuid` and
-- `timestamptz`, compact already, and needs no such migration.
create table runs_compact (
    id blob primary key not null,
    app_id blob not null,
    trigger_id blob,
    script_id blob,
    event_id blob not null,
    source text not null,
    op text not null,
    attempt integer not null,
    principal text not null,
    started_at integer not null,
    duration_us integer not null,
    outcome text not null
        check (outcome in ('succeeded', 'failed', 'limit', 'denied', 'skipped',
                           'recursion_stopped', 'depth_exceeded')),
    limit_name text,
    error text,
    reply_bytes integer,
    logs text,
    recorded_at integer not null
) without rowid;

insert into runs_compact
select unhex(replace(id, '-', '')),
       unhex(replace(app_id, '-', '')),
       unhex(replace(trigger_id, '-', '')),
       unhex(replace(script_id, '-', '')),
       unhex(replace(event_id, '-', '')),
       source, op, attempt, principal,
       -- '2026-01-02T03:04:05.000006Z': whole seconds, then the microseconds.
       unixepoch(started_at) * 1000000 + cast(substr(started_at, 21, 6) as integer),
       duration_us, outcome, limit_name, error, reply_bytes, logs,
       unixepoch(recorded_at) * 1000000 + cast(substr(recorded_at, 21, 6) as integer)
from runs;

drop table runs;
alter table runs_compact rename to runs;
create index idx_runs_app_recorded on runs (app_id, recorded_at, id);
