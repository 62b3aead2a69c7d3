-- Deadlines of choreographed orders: recorded with OrderPlaced, cleared
-- when the order ends; a pending order past its deadline is rejected.
CREATE TABLE order_deadlines (
    order_id TEXT PRIMARY KEY,
    deadline TEXT NOT NULL
);
CREATE INDEX order_deadlines_due ON order_deadlines (deadline);
