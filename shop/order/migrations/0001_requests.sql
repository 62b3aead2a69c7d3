-- Idempotency: the first request with a key wins; a repeat returns its
-- order. Written in the same transaction as the order's events.
CREATE TABLE order_requests (
    idempotency_key TEXT PRIMARY KEY,
    request_hash    TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
