-- The logical event id a script sees (SPEC 5.9: stable across retries).
-- A raw event fanned out to several failing triggers becomes several rows;
-- each row has its own primary key but all carry the raw event's id here.
-- Null means "the row's own id" (rows written before this migration, and
-- producers that do not set it).
alter table outbox add column event_id text;
