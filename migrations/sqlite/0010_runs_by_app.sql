-- Run records keyed by (app, id) alone, with no secondary index. Run ids
-- are UUIDv7, drawn when the run finishes: ordered by that time, so one
-- app's runs in id order are the order they finished, and a time range is
-- a range of ids. Listings, `logs --follow`, retention and a dead letter's
-- history are all range reads of one app's part of this one b-tree, and
-- recording a run is one b-tree insert where it was two (the table keyed
-- by id and an index on (app_id, recorded_at, id)): with
-- PICLOUD_RUNS=all the dispatcher keeps more of its throughput without
-- runs (README, "What it costs"). A run found by id alone (`runs show`)
-- is one seek per app.
create table runs_by_app (
    app_id blob not null,
    id blob not null,
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
    recorded_at integer not null,
    primary key (app_id, id)
) without rowid;

insert into runs_by_app (app_id, id, trigger_id, script_id, event_id, source, op,
                         attempt, principal, started_at, duration_us, outcome,
                         limit_name, error, reply_bytes, logs, recorded_at)
select app_id, id, trigger_id, script_id, event_id, source, op,
       attempt, principal, started_at, duration_us, outcome,
       limit_name, error, reply_bytes, logs, recorded_at
from runs;

drop table runs;
alter table runs_by_app rename to runs;
