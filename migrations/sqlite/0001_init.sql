-- PiCloud trigger host: the initial schema (SQLite).
--
-- The same tables, columns, checks and index names as the PostgreSQL
-- schema, with the nearest types: uuids as hyphenated TEXT, timestamps as
-- fixed-width UTC TEXT ('2026-01-02T03:04:05.000006Z', so comparing the text
-- compares the times), JSON as TEXT, bytes as BLOB. The application binds
-- every timestamp; the defaults below produce the same fixed-width form.
-- Applied once; never edited after release.

create table apps (
    id text primary key not null,
    name text not null unique,
    created_at text not null
        default (strftime('%Y-%m-%dT%H:%M:%S', 'now') || substr(strftime('%f', 'now'), 3) || '000Z')
);

create table app_members (
    app_id text not null references apps(id) on delete cascade,
    principal text not null,
    role text not null check (role in ('admin', 'developer', 'viewer')),
    primary key (app_id, principal)
);

create table scripts (
    id text primary key not null,
    app_id text not null references apps(id) on delete cascade,
    name text not null,
    wasm blob not null,
    sha256 text not null,
    size integer not null,
    created_at text not null,
    updated_at text not null,
    unique (app_id, name)
);

create table kv_entries (
    app_id text not null references apps(id) on delete cascade,
    collection text not null,
    key text not null,
    value text not null,
    version integer not null,
    updated_at text not null,
    primary key (app_id, collection, key)
);

-- Triggers, Layout E: one parent row per trigger, one detail row per kind.
create table triggers (
    id text primary key not null,
    app_id text not null references apps(id) on delete cascade,
    script_id text not null references scripts(id) on delete cascade,
    kind text not null check (kind in ('kv', 'dead_letter')),
    name text not null,
    enabled boolean not null default 1,
    registered_by_principal text not null,
    created_at text not null,
    updated_at text not null
);
create index idx_triggers_matching on triggers (app_id, kind) where enabled;
create index idx_triggers_script on triggers (script_id);

create table kv_trigger_details (
    trigger_id text primary key not null references triggers(id) on delete cascade,
    collection_pattern text not null,
    ops text not null check (ops in ('set', 'delete', 'set,delete'))
);

create table dead_letter_trigger_details (
    trigger_id text primary key not null references triggers(id) on delete cascade,
    source_pattern text not null
);

-- Events waiting to be dispatched (trigger_id, script_id: no foreign key,
-- see the PostgreSQL schema).
create table outbox (
    id text primary key not null,
    app_id text not null references apps(id) on delete cascade,
    source text not null,
    op text not null,
    trigger_id text,
    script_id text,
    principal text,
    payload text not null,
    depth integer not null default 0,
    attempt_count integer not null default 0,
    first_attempt_at text,
    last_attempt_at text,
    last_error text,
    due_at text not null,
    locked_until text,
    locked_by text,
    reply_to text,
    created_at text not null
);
create index idx_outbox_due on outbox (due_at);
create index idx_outbox_app on outbox (app_id);

-- The seed schema of SPEC section 12 with SQLite types.
create table dead_letters (
    id text primary key not null,
    app_id text not null references apps(id) on delete cascade,
    original_event_id text not null,
    source text not null,
    op text not null,
    trigger_id text,
    script_id text,
    payload text not null,
    attempt_count integer not null,
    first_attempt_at text not null,
    last_attempt_at text not null,
    last_error text not null,
    created_at text not null
        default (strftime('%Y-%m-%dT%H:%M:%S', 'now') || substr(strftime('%f', 'now'), 3) || '000Z'),
    resolved_at text,
    resolution text
        check (resolution in
            ('replayed', 'ignored', 'handled_by_script', 'handler_failed'))
);
create index idx_dead_letters_app_unresolved
    on dead_letters (app_id)
    where resolved_at is null;
create index idx_dead_letters_gc on dead_letters (created_at);

-- The depth of a dead letter's original event (a replay keeps it).
create table dead_letter_depths (
    dead_letter_id text primary key not null references dead_letters(id) on delete cascade,
    depth integer not null
);

create table abandoned_executions (
    id text primary key not null,
    app_id text not null references apps(id) on delete cascade,
    outbox_event_id text not null,
    script_id text not null,
    trigger_id text,
    reply_to text not null,
    outcome text not null check (outcome in ('ok', 'error')),
    detail text not null,
    created_at text not null
);
create index idx_abandoned_executions_gc on abandoned_executions (created_at);

-- Replies of synchronous invocations parked for the inbox's owner.
create table invocation_replies (
    inbox text primary key not null,
    app_id text not null references apps(id) on delete cascade,
    outbox_event_id text not null,
    script_id text not null,
    outcome text not null check (outcome in ('ok', 'error')),
    body blob not null,
    created_at text not null
);
create index idx_invocation_replies_stale on invocation_replies (created_at);
