-- Cron, queue and pub/sub triggers, a retry policy and a depth limit per
-- trigger, and the chain of triggers that caused an event.
--
-- `triggers.kind` gains 'cron', 'queue' and 'pubsub'. SQLite cannot change
-- a check constraint in place, so `triggers` and its two detail tables are
-- rebuilt (children first, so no cascade fires; the renames point the new
-- detail tables' foreign keys at the new `triggers`). The retry columns
-- are null where the registration chose nothing: the host's defaults
-- (`PICLOUD_TRIGGER_RETRY_*`) apply.
create table triggers_v13 (
    id text primary key not null,
    app_id text not null references apps(id) on delete cascade,
    script_id text not null references scripts(id) on delete cascade,
    kind text not null check (kind in ('kv', 'dead_letter', 'cron', 'queue', 'pubsub')),
    name text not null,
    enabled boolean not null default 1,
    registered_by_principal text not null,
    created_at text not null,
    updated_at text not null,
    max_depth bigint,
    retry_max_attempts bigint,
    retry_backoff text check (retry_backoff in ('exponential', 'constant', 'linear')),
    retry_base_ms bigint,
    retry_cap_ms bigint,
    retry_jitter_permille bigint,
    retry_max_age_ms bigint
);
insert into triggers_v13 (id, app_id, script_id, kind, name, enabled,
                          registered_by_principal, created_at, updated_at)
    select id, app_id, script_id, kind, name, enabled,
           registered_by_principal, created_at, updated_at
    from triggers;

create table kv_trigger_details_v13 (
    trigger_id text primary key not null references triggers_v13(id) on delete cascade,
    collection_pattern text not null,
    ops text not null check (ops in ('set', 'delete', 'set,delete')),
    ordered boolean not null default 0
);
insert into kv_trigger_details_v13 select trigger_id, collection_pattern, ops, ordered
    from kv_trigger_details;
create table dead_letter_trigger_details_v13 (
    trigger_id text primary key not null references triggers_v13(id) on delete cascade,
    source_pattern text not null
);
insert into dead_letter_trigger_details_v13 select trigger_id, source_pattern
    from dead_letter_trigger_details;

drop table kv_trigger_details;
drop table dead_letter_trigger_details;
drop table triggers;
alter table triggers_v13 rename to triggers;
alter table kv_trigger_details_v13 rename to kv_trigger_details;
alter table dead_letter_trigger_details_v13 rename to dead_letter_trigger_details;
create index idx_triggers_matching on triggers (app_id, kind) where enabled;
create index idx_triggers_script on triggers (script_id);

-- A cron trigger's schedule, and when its next tick is due.
create table cron_trigger_details (
    trigger_id text primary key not null references triggers(id) on delete cascade,
    schedule text not null,
    timezone text not null,
    catch_up text not null check (catch_up in ('last', 'skip')),
    next_at text
);
create index idx_cron_next on cron_trigger_details (next_at);

-- One row per tick that became an event: the insert that succeeds is the
-- one dispatcher that enqueues the tick. Pruned after a day.
create table cron_ticks (
    trigger_id text not null references triggers(id) on delete cascade,
    scheduled_at text not null,
    primary key (trigger_id, scheduled_at)
);

-- A queue's consumer: at most one per queue of an app.
create table queue_trigger_details (
    trigger_id text primary key not null references triggers(id) on delete cascade,
    app_id text not null references apps(id) on delete cascade,
    queue text not null,
    batch_size bigint not null check (batch_size between 1 and 1000),
    unique (app_id, queue)
);

create table pubsub_trigger_details (
    trigger_id text primary key not null references triggers(id) on delete cascade,
    topic_pattern text not null
);

-- The names of the triggers whose runs led to an event, newest first (a
-- JSON array, at most 16): a depth stop's dead letter names them. Null for
-- an event from outside.
alter table outbox add column chain text;
