-- Starting stock for the catalog's starter products, loaded on first start.
INSERT INTO stock (sku, on_hand, reserved) VALUES
    ('TEA-001', 100, 0),
    ('TEA-002', 100, 0),
    ('TEA-003', 25, 0),
    ('MUG-001', 40, 0),
    ('POT-001', 10, 0),
    ('KET-001', 5, 0),
    ('FLT-001', 500, 0),
    ('SCL-001', 15, 0);
