-- The query side: order summaries, kept up to date from the order events
-- by a projection, in a database of their own.
CREATE TABLE order_summaries (
    order_id    TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    items       TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    placed_at   TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX order_summaries_by_customer ON order_summaries (customer_id, placed_at);
