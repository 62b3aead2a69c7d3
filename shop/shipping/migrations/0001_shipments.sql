-- One shipment per order: the shipment id is derived from the order id, so
-- the primary key makes a second shipment of an order impossible. A cancel
-- that finds no shipment leaves a tombstone (status cancelled, no address)
-- that refuses a late schedule.
CREATE TABLE shipments (
    shipment_id TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    address     TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX shipments_by_order ON shipments (order_id);
