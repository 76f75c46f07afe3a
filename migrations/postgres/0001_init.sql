-- PiCloud trigger host: the initial schema (PostgreSQL).
--
-- Applied once by `picloud-host migrate` or `Store::migrate`; never edited
-- after release: changes come as new migrations. Names are `collate "C"`
-- where rows are listed or paged by them, so ordering is bytewise, as on
-- SQLite.

create table apps (
    id uuid primary key,
    name text collate "C" not null unique,
    created_at timestamptz not null default now()
);

create table app_members (
    app_id uuid not null references apps(id) on delete cascade,
    principal text collate "C" not null,
    role text not null check (role in ('admin', 'developer', 'viewer')),
    primary key (app_id, principal)
);

create table scripts (
    id uuid primary key,
    app_id uuid not null references apps(id) on delete cascade,
    name text collate "C" not null,
    wasm bytea not null,
    sha256 text not null,
    size bigint not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (app_id, name)
);

create table kv_entries (
    app_id uuid not null references apps(id) on delete cascade,
    collection text collate "C" not null,
    key text collate "C" not null,
    value jsonb not null,
    version bigint not null,
    updated_at timestamptz not null default now(),
    primary key (app_id, collection, key)
);

-- Triggers, Layout E: one parent row per trigger, one detail row per kind.
create table triggers (
    id uuid primary key,
    app_id uuid not null references apps(id) on delete cascade,
    script_id uuid not null references scripts(id) on delete cascade,
    kind text not null check (kind in ('kv', 'dead_letter')),
    name text not null,
    enabled boolean not null default true,
    registered_by_principal text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- The dispatch-time matching query: an app's enabled triggers of one kind.
create index idx_triggers_matching on triggers (app_id, kind) where enabled;
create index idx_triggers_script on triggers (script_id);

create table kv_trigger_details (
    trigger_id uuid primary key references triggers(id) on delete cascade,
    collection_pattern text not null,
    ops text not null check (ops in ('set', 'delete', 'set,delete'))
);

create table dead_letter_trigger_details (
    trigger_id uuid primary key references triggers(id) on delete cascade,
    source_pattern text not null
);

-- Events waiting to be dispatched. trigger_id and script_id carry no
-- foreign key: an invocation whose trigger or script was removed is
-- dropped by the dispatcher, not turned into a raw event.
create table outbox (
    id uuid primary key,
    app_id uuid not null references apps(id) on delete cascade,
    source text not null,
    op text not null,
    trigger_id uuid,
    script_id uuid,
    principal text,
    payload jsonb not null,
    depth int not null default 0,
    attempt_count int not null default 0,
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    last_error text,
    due_at timestamptz not null default now(),
    locked_until timestamptz,
    locked_by text,
    reply_to text,
    created_at timestamptz not null default now()
);
-- The claim: due rows in due order.
create index idx_outbox_due on outbox (due_at);
create index idx_outbox_app on outbox (app_id);

-- Dispatchers LISTEN on picloud_outbox; one notification per inserting
-- statement (and PostgreSQL folds duplicates within a transaction), so an
-- embedder's own inserts wake dispatchers too.
create function picloud_outbox_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('picloud_outbox', '');
    return null;
end;
$$;

create trigger outbox_notify
    after insert on outbox
    for each statement
    execute function picloud_outbox_notify();

-- The seed schema (SPEC section 12), kept exactly.
CREATE TABLE dead_letters (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    app_id UUID NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    original_event_id UUID NOT NULL,
    source TEXT NOT NULL,
    op TEXT NOT NULL,
    trigger_id UUID,
    script_id UUID,
    payload JSONB NOT NULL,
    attempt_count INT NOT NULL,
    first_attempt_at TIMESTAMPTZ NOT NULL,
    last_attempt_at TIMESTAMPTZ NOT NULL,
    last_error TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    resolved_at TIMESTAMPTZ,
    resolution TEXT
        CHECK (resolution IN
            ('replayed', 'ignored', 'handled_by_script', 'handler_failed'))
);
CREATE INDEX idx_dead_letters_app_unresolved
    ON dead_letters (app_id)
    WHERE resolved_at IS NULL;
CREATE INDEX idx_dead_letters_gc ON dead_letters (created_at);

-- The depth of a dead letter's original event, which the seed schema has no
-- column for: a replay re-enqueues at the same depth. Written in the same
-- transaction as the dead letter.
create table dead_letter_depths (
    dead_letter_id uuid primary key references dead_letters(id) on delete cascade,
    depth int not null
);

create table abandoned_executions (
    id uuid primary key,
    app_id uuid not null references apps(id) on delete cascade,
    outbox_event_id uuid not null,
    script_id uuid not null,
    trigger_id uuid,
    reply_to text not null,
    outcome text not null check (outcome in ('ok', 'error')),
    detail text not null,
    created_at timestamptz not null default now()
);
create index idx_abandoned_executions_gc on abandoned_executions (created_at);

-- Replies of synchronous invocations parked for the process that owns the
-- inbox; that process LISTENs on picloud_reply (payload: the inbox).
create table invocation_replies (
    inbox text primary key,
    app_id uuid not null references apps(id) on delete cascade,
    outbox_event_id uuid not null,
    script_id uuid not null,
    outcome text not null check (outcome in ('ok', 'error')),
    body bytea not null,
    created_at timestamptz not null default now()
);
create index idx_invocation_replies_stale on invocation_replies (created_at);
