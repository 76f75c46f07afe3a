-- What scripts read and where they may reach (issue 15): the app's
-- variables and secrets, served through `wasi:config/store`, and the hosts
-- its scripts' outbound HTTP requests may go to.
--
-- A variable's value is its UTF-8 text; a secret's is sealed with the
-- host's PICLOUD_SECRET_KEY (nonce, then XChaCha20-Poly1305 ciphertext),
-- never the plain text.
create table app_config (
    app_id text not null references apps(id) on delete cascade,
    name text not null,
    secret integer not null check (secret in (0, 1)),
    value blob not null,
    updated_at text not null,
    primary key (app_id, name)
);

-- Patterns in canonical form, `scheme://host:port` (host may be `*.domain`).
create table app_outbound_hosts (
    app_id text not null references apps(id) on delete cascade,
    pattern text not null,
    created_at text not null,
    primary key (app_id, pattern)
);
