-- One notification per order event, keyed by the event's message id, so a
-- redelivered event cannot notify twice. created_at is fixed-width UTC
-- text: it sorts as it reads.
CREATE TABLE notifications (
    notification_id TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('order_confirmed', 'order_rejected', 'order_cancelled')),
    message         TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX notifications_by_customer ON notifications (customer_id, created_at, notification_id);
