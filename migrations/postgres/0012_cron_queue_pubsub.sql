-- Cron, queue and pub/sub triggers, a retry policy and a depth limit per
-- trigger, and the chain of triggers that caused an event.
--
-- The retry columns are null where the registration chose nothing: the
-- host's defaults (`PICLOUD_TRIGGER_RETRY_*`) apply.
alter table triggers drop constraint triggers_kind_check;
alter table triggers add constraint triggers_kind_check
    check (kind in ('kv', 'dead_letter', 'cron', 'queue', 'pubsub'));
alter table triggers
    add column max_depth bigint,
    add column retry_max_attempts bigint,
    add column retry_backoff text check (retry_backoff in ('exponential', 'constant', 'linear')),
    add column retry_base_ms bigint,
    add column retry_cap_ms bigint,
    add column retry_jitter_permille bigint,
    add column retry_max_age_ms bigint;

-- A cron trigger's schedule, and when its next tick is due.
create table cron_trigger_details (
    trigger_id uuid primary key references triggers(id) on delete cascade,
    schedule text not null,
    timezone text not null,
    catch_up text not null check (catch_up in ('last', 'skip')),
    next_at timestamptz
);
create index idx_cron_next on cron_trigger_details (next_at);

-- One row per tick that became an event: the insert that succeeds is the
-- one dispatcher that enqueues the tick. Pruned after a day.
create table cron_ticks (
    trigger_id uuid not null references triggers(id) on delete cascade,
    scheduled_at timestamptz not null,
    primary key (trigger_id, scheduled_at)
);

-- A queue's consumer: at most one per queue of an app.
create table queue_trigger_details (
    trigger_id uuid primary key references triggers(id) on delete cascade,
    app_id uuid not null references apps(id) on delete cascade,
    queue text not null,
    batch_size bigint not null check (batch_size between 1 and 1000),
    unique (app_id, queue)
);

create table pubsub_trigger_details (
    trigger_id uuid primary key references triggers(id) on delete cascade,
    topic_pattern text not null
);

-- The names of the triggers whose runs led to an event, newest first (a
-- JSON array, at most 16): a depth stop's dead letter names them. Null for
-- an event from outside.
alter table outbox add column chain text;
