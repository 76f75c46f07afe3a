-- Rows of an ordered kv trigger wait parked behind the row ahead of them.
--
-- A fan-out inserts an ordered trigger's row with due_at 9999-01-02 (never
-- due, so claims never look at it) when an earlier row of its key is still
-- in the outbox: a raw row not yet fanned out, or its trigger's row. When
-- an ordered trigger's row leaves the outbox, however it leaves (it ran,
-- became a dead letter, was skipped, or was deleted by hand), this makes
-- the first parked row of its key and trigger due. Rows of other triggers
-- pay only the trigger's condition. The claim still checks the order, and
-- the dispatcher's sweep releases what nothing holds back any more.
create trigger outbox_release_next after delete on outbox
when old.order_key is not null and old.trigger_id is not null
begin
    update outbox set due_at = strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')
    where id = (
        select p.id from outbox p
        where p.app_id = old.app_id and p.order_key = old.order_key
          and p.trigger_id = old.trigger_id
          and p.due_at = '9999-01-02T00:00:00.000000Z'
        order by p.order_seq, p.event_id
        limit 1);
end;
