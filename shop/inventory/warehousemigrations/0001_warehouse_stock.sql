-- A warehouse's stock. held is what prepared transfers are taking out (on
-- SQLite, which has no PREPARE TRANSACTION); it cannot be counted away or
-- moved twice until the transfer is decided.
CREATE TABLE warehouse_stock (
    sku     TEXT PRIMARY KEY,
    on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
    held    BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    CHECK (held <= on_hand)
);
