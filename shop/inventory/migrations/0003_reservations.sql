-- Stock reservations: what an order holds until it is sold (committed) or
-- given back (released). The stock table's reserved column is the sum of
-- the held reservations' quantities; a reservation and its stock change
-- are written in one transaction. A released row without items is a
-- tombstone: the release came first, and a late reserve is refused.
CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('held', 'committed', 'released')),
    items      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
