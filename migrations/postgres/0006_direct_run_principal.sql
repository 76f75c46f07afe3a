-- The principal a direct run of a script ran as (`NewEvent::invocation`,
-- no trigger), copied from its outbox row when it is dead-lettered, so
-- that a replay runs as the same principal. Null for every other dead
-- letter: a trigger's run is replayed as the trigger's principal.
alter table dead_letter_depths add column principal text;
