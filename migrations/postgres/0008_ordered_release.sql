-- Rows of an ordered kv trigger wait parked behind the row ahead of them.
--
-- A fan-out inserts an ordered trigger's row with due_at 9999-01-02 (never
-- due, so claims never look at it) when an earlier row of its key is still
-- in the outbox: a raw row not yet fanned out, or its trigger's row. That
-- check locks the row it finds (`for share skip locked`). When an ordered
-- trigger's row leaves the outbox, however it leaves (it ran, became a dead
-- letter, was skipped, or was deleted by hand), this makes the first parked
-- row of its key and trigger due. It runs after the delete, which waited
-- for any fan-out holding the row, with a snapshot of its own (a statement
-- in a volatile function), so it sees what such a fan-out parked. Rows of
-- other triggers pay only the trigger's condition. The claim still checks
-- the order, and the dispatcher's sweep releases what nothing holds back.
--
-- The function keeps the search path of this migration (the host's
-- schema): it runs on whatever connection deletes the row.
create function picloud_release_next() returns trigger
language plpgsql
set search_path from current
as $$
begin
    update outbox set due_at = now()
    where id = (
        select p.id from outbox p
        where p.app_id = old.app_id and p.order_key = old.order_key
          and p.trigger_id = old.trigger_id
          and p.due_at = timestamptz '9999-01-02 00:00:00+00'
        order by p.order_seq, p.event_id
        limit 1);
    return null;
end;
$$;

create trigger outbox_release_next
    after delete on outbox
    for each row
    when (old.order_key is not null and old.trigger_id is not null)
    execute function picloud_release_next();
