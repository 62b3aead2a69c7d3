-- One row per payment id: the primary key makes a second charge under the
-- same idempotency key impossible. A refund that finds no payment leaves a
-- tombstone (status failed, request_hash '') that voids a later charge.
CREATE TABLE payments (
    payment_id     TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL,
    amount_cents   BIGINT NOT NULL CHECK (amount_cents >= 0),
    refunded_cents BIGINT NOT NULL DEFAULT 0 CHECK (refunded_cents >= 0 AND refunded_cents <= amount_cents),
    status         TEXT NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    request_hash   TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id, created_at);
