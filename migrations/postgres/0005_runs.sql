-- Run records (SPEC 14): what every invocation did. Written in the same
-- transaction as its event's outcome. No foreign key to apps: a run is
-- history, written on the hot path (a foreign key costs a lookup per row),
-- and garbage collection ages it out by app and by time.
create table runs (
    id uuid primary key,
    app_id uuid not null,
    trigger_id uuid,
    script_id uuid,
    event_id uuid not null,
    source text not null,
    op text not null,
    attempt int not null,
    principal text not null,
    started_at timestamptz not null,
    duration_us bigint not null,
    outcome text not null
        check (outcome in ('succeeded', 'failed', 'limit', 'denied', 'skipped',
                           'recursion_stopped', 'depth_exceeded')),
    limit_name text,
    error text,
    reply_bytes bigint,
    logs jsonb,
    recorded_at timestamptz not null default now()
);
-- Listings, follow, retention and a dead letter's history: one app's runs
-- in the order they were recorded. The only index beside the key: each one
-- is a write per run on the hot path (an index on event_id cost SQLite 4%
-- of its throughput); a dead letter's runs are found within its app and
-- the time its attempts took.
create index idx_runs_app_recorded on runs (app_id, recorded_at, id);

-- The stable id of a dead letter's original event (an invocation row's
-- `event_id`), which the seed schema has no column for: its runs are found
-- by it. Null for dead letters made before this migration.
alter table dead_letter_depths add column event_id uuid;

-- `logs --follow` in any process hears of new runs: one notification per
-- statement that records some (the dispatcher's statements that complete
-- rows without runs to record leave the runs table alone).
create function picloud_runs_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('picloud_runs', '');
    return null;
end;
$$;
create trigger runs_notify
    after insert on runs
    for each statement
    execute function picloud_runs_notify();
