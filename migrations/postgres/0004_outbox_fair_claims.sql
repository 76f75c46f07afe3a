-- Fair claims across apps (SPEC section 14): under a backlog the claim walks
-- the apps that have rows in the outbox, one index probe per app, and takes
-- each app's oldest due rows. Both need the outbox in (app_id, due_at)
-- order. The new index also serves everything the one on app_id alone did
-- (its leading column is app_id: the cascade from apps, counts per app), so
-- that one goes.
drop index if exists idx_outbox_app;
create index idx_outbox_app_due on outbox (app_id, due_at);
