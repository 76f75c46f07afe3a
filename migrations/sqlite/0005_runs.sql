-- Run records (SPEC 14): what every invocation did. Written in the same
-- transaction as its event's outcome. No foreign key to apps: a run is
-- history, written on the hot path (a foreign key costs a lookup per row),
-- and garbage collection ages it out by app and by time.
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
);
-- Listings, follow and retention: one app's runs in the order they were
-- recorded.
create index idx_runs_app_recorded on runs (app_id, recorded_at, id);
-- A dead letter's history: every run of its original event.
create index idx_runs_event on runs (event_id);

-- The stable id of a dead letter's original event (an invocation row's
-- `event_id`), which the seed schema has no column for: its runs are found
-- by it. Null for dead letters made before this migration.
alter table dead_letter_depths add column event_id text;
