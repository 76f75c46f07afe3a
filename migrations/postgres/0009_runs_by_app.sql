-- Run records keyed by (app, id) alone, with no secondary index. Run ids
-- are UUIDv7, drawn when the run finishes: ordered by that time, so one
-- app's runs in id order are the order they finished, and a time range is
-- a range of ids. Listings, `logs --follow`, retention and a dead letter's
-- history are all range scans of this one index, and recording a run
-- writes one index entry where it wrote two (the key on id and an index
-- on (app_id, recorded_at, id)). A run found by id alone (`runs show`)
-- is one index probe per app.
alter table runs drop constraint runs_pkey;
drop index idx_runs_app_recorded;
alter table runs add primary key (app_id, id);
