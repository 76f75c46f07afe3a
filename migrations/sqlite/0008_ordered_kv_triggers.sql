-- Per-key ordering for kv triggers (`trigger add-kv --ordered`).
--
-- An ordered trigger runs the events of one (collection, key) one at a
-- time, in the order they were written: while one is running or waiting
-- for its retry, later ones of that key wait. The raw kv row of an app that
-- has an ordered trigger carries `order_key` (the collection and key) and
-- `order_seq` (one more than the highest of that key in the outbox, taken
-- under the kv row's lock, so writes of a key get rising numbers). The
-- claim fans such a row out into one invocation row per ordered trigger
-- with the same key and number, and claims an ordered invocation row only
-- when no earlier row of its key (raw, or of its trigger) is left. Rows of
-- apps without ordered triggers leave both columns null and the index
-- below untouched.
alter table kv_trigger_details add column ordered boolean not null default 0;
alter table outbox add column order_key text;
alter table outbox add column order_seq bigint;
create index idx_outbox_order on outbox (app_id, order_key, order_seq)
    where order_key is not null;
