-- API tokens for the HTTP API, and the dead-letter indexes its pages read.
--
-- A token is bound to a principal; only the SHA-256 of its secret is kept
-- (the secret is printed once, at creation). A revoked token stays, with
-- its revocation time, so that using it says "revoked" rather than
-- "unknown", and `token list` shows its history.
create table api_tokens (
    id uuid primary key,
    principal text collate "C" not null,
    name text collate "C" not null,
    secret_sha256 text not null unique,
    created_at timestamptz not null,
    revoked_at timestamptz
);
create index idx_api_tokens_principal on api_tokens (principal, created_at);

-- An app's dead letters a page at a time, newest or oldest first, with
-- no sort: one index for every dead letter, one for the unresolved ones.
-- The badge (the count of an app's unresolved dead letters) reads the
-- partial one, whose name it keeps.
drop index idx_dead_letters_app_unresolved;
create index idx_dead_letters_app_unresolved
    on dead_letters (app_id, created_at, id)
    where resolved_at is null;
create index idx_dead_letters_app_created on dead_letters (app_id, created_at, id);
