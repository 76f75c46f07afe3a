-- The example application's own table: its orders, written in the same
-- transaction as the KV write that triggers the order-totals script.
create table orders (
    id text primary key,
    body text not null
);
