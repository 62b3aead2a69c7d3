-- The starter product set, loaded on first start. Inventory seeds stock for
-- the same skus in its own database.
INSERT INTO products (sku, name, description, price_cents) VALUES
    ('TEA-001', 'Sencha green tea', 'Steamed Japanese green tea, 100 g tin', 1250),
    ('TEA-002', 'Assam breakfast tea', 'Strong malty black tea, 250 g bag', 990),
    ('TEA-003', 'Jasmine pearls', 'Hand-rolled green tea scented with jasmine, 50 g', 1800),
    ('MUG-001', 'Stoneware mug', 'Glazed stoneware mug, 350 ml', 1500),
    ('POT-001', 'Cast iron teapot', 'Tetsubin teapot with infuser, 0.8 l', 5900),
    ('KET-001', 'Gooseneck kettle', 'Electric kettle with temperature control, 1 l', 7900),
    ('FLT-001', 'Paper filters', 'Unbleached paper tea filters, pack of 100', 450),
    ('SCL-001', 'Brewing scale', 'Kitchen scale with timer, 0.1 g precision', 3400);
