-- Run records (SPEC 14): what every invocation did. Written in the same
-- transaction as its event's outcome. WITHOUT ROWID: the rows live in the
-- b-tree of their key (a time-ordered UUIDv7, so inserts append), not in a
-- rowid table beside it: one b-tree less to write per run, which took the
-- cost of recording runs from 31% of the dispatcher's throughput to 12%
-- in `bench dispatch`. No foreign key to apps: a run is history, written on
-- the hot path (a foreign key costs a lookup per row), and garbage
-- collection ages it out by app and by time.
create table runs (
    id text primary key not null,
    app_id text not null,
    trigger_id text,
    script_id text,
    event_id text not null,
    source text not null,
    op text not null,
    attempt integer not null,
    principal text not null,
    started_at text not null,
    duration_us integer not null,
    outcome text not null
        check (outcome in ('succeeded', 'failed', 'limit', 'denied', 'skipped',
                           'recursion_stopped', 'depth_exceeded')),
    limit_name text,
    error text,
    reply_bytes integer,
    logs text,
    recorded_at text not null
) without rowid;
-- Listings, follow, retention and a dead letter's history: one app's runs
-- in the order they were recorded. The only index beside the key: each one
-- is a write per run on the hot path (an index on event_id cost SQLite 4%
-- of its throughput); a dead letter's runs are found within its app and
-- the time its attempts took.
create index idx_runs_app_recorded on runs (app_id, recorded_at, id);

-- The stable id of a dead letter's original event (an invocation row's
-- `event_id`), which the seed schema has no column for: its runs are found
-- by it. Null for dead letters made before this migration.
alter table dead_letter_depths add column event_id text;
