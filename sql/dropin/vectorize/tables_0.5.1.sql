-- pg_vectorize's enum types (its labels, in its order) and its example table.
CREATE TYPE vectorize.tablemethod AS ENUM ('append', 'join');
CREATE TYPE vectorize.indexdist AS ENUM ('pgv_hnsw_l2', 'pgv_hnsw_ip', 'pgv_hnsw_cosine', 'vsc_diskann_cosine');
COMMENT ON TYPE vectorize.tablemethod IS 'ml_stack_vectorize: where embeddings live: join (vectorize._embeddings_<job>, a view of the job''s table in ml_stack); append is not available.';
COMMENT ON TYPE vectorize.indexdist IS 'ml_stack_vectorize: the distance of a search: the cosine ones (exact cosine similarity, no index: pgvector is not needed).';

-- What pg_vectorize keeps about a job beyond ml_stack's vector job (ml_stack.vector_job_definitions).
CREATE TABLE vectorize._job_settings (
    job_id          bigint PRIMARY KEY REFERENCES ml_stack.vector_job_definitions (id) ON DELETE CASCADE,
    index_dist_type vectorize.indexdist NOT NULL,
    table_method    vectorize.tablemethod NOT NULL,
    update_col      text,
    params          jsonb NOT NULL
);
COMMENT ON TABLE vectorize._job_settings IS
    'ml_stack_vectorize: each vectorize.table job''s pg_vectorize settings (its ml_stack vector job holds the rest); see vectorize.job.';
SELECT pg_catalog.pg_extension_config_dump('vectorize._job_settings', '');

-- A table to try the README's examples on (our own rows: products, each with a one-line description).
CREATE TABLE vectorize.example_products (
    product_id       serial PRIMARY KEY,
    product_name     text NOT NULL,
    description      text,
    product_category text NOT NULL,
    price            numeric(10, 2) NOT NULL,
    last_updated_at  timestamptz DEFAULT CURRENT_TIMESTAMP
);
COMMENT ON TABLE vectorize.example_products IS 'ml_stack_vectorize: 40 example products to try vectorize.table and vectorize.search on.';
INSERT INTO vectorize.example_products (product_name, description, product_category, price) VALUES
    ('Pencil', 'Wooden stick with a graphite core for writing and sketching on paper', 'stationery', 0.99),
    ('Laptop Stand', 'Raised aluminium platform that lifts a laptop screen to eye level', 'electronics', 34.50),
    ('Desk Lamp', 'Adjustable LED light for reading and working at a desk', 'home', 24.00),
    ('Bluetooth Speaker', 'Portable wireless speaker that plays music from a phone', 'electronics', 45.00),
    ('Notebook', 'Bound pad of lined paper for notes and journaling', 'stationery', 3.50),
    ('Backpack', 'Bag with shoulder straps for carrying books, a laptop and daily gear', 'travel', 39.99),
    ('Water Bottle', 'Reusable insulated flask that keeps drinks cold or hot', 'kitchen', 18.00),
    ('Coffee Mug', 'Ceramic cup with a handle for hot coffee or tea', 'kitchen', 8.50),
    ('Headphones', 'Over-ear headset with noise cancellation for music and calls', 'electronics', 89.00),
    ('Wireless Mouse', 'Cordless pointing device for a computer, with a USB receiver', 'electronics', 19.99),
    ('Stylus Pen', 'Pen with a soft tip for drawing and writing on a touch screen tablet or phone', 'electronics', 12.00),
    ('Sunglasses', 'Tinted glasses that protect the eyes from bright sunlight', 'apparel', 25.00),
    ('Phone Charger', 'Cable and wall plug that recharge the battery of a mobile phone', 'electronics', 15.00),
    ('Phone Case', 'Protective cover that shields a smartphone from drops and scratches', 'electronics', 14.00),
    ('Yoga Mat', 'Cushioned non-slip mat for yoga, stretching and floor exercise', 'sports', 29.00),
    ('Running Shoes', 'Lightweight sneakers with cushioned soles for jogging', 'sports', 79.00),
    ('Alarm Clock', 'Bedside clock that rings to wake you up in the morning', 'home', 16.00),
    ('Umbrella', 'Folding canopy that keeps you dry in the rain', 'travel', 12.50),
    ('Wall Calendar', 'Printed monthly planner to hang on a wall', 'stationery', 9.00),
    ('Scissors', 'Pair of steel blades for cutting paper, fabric and tape', 'stationery', 6.00),
    ('Keyboard', 'Mechanical typing keyboard that connects to a computer', 'electronics', 59.00),
    ('USB Flash Drive', 'Small portable storage stick for files and backups', 'electronics', 11.00),
    ('Power Bank', 'Rechargeable battery pack that charges phones and tablets on the go', 'electronics', 29.99),
    ('Tablet Holder', 'Adjustable arm that holds a tablet or e-reader upright', 'electronics', 21.00),
    ('Cutting Board', 'Thick wooden board for chopping vegetables and meat', 'kitchen', 22.00),
    ('Frying Pan', 'Non-stick skillet for cooking eggs, pancakes and stir fries', 'kitchen', 32.00),
    ('Tea Kettle', 'Stainless steel pot that boils water on the stove', 'kitchen', 27.00),
    ('Throw Blanket', 'Soft fleece blanket for the sofa on cold evenings', 'home', 35.00),
    ('Picture Frame', 'Wooden frame that displays a photo on a shelf or wall', 'home', 13.00),
    ('Plant Pot', 'Ceramic pot with a drainage hole for houseplants', 'home', 10.00),
    ('Tent', 'Two-person shelter for camping outdoors', 'outdoors', 120.00),
    ('Sleeping Bag', 'Insulated bag for sleeping warm while camping', 'outdoors', 65.00),
    ('Flashlight', 'Battery-powered torch that lights the way in the dark', 'outdoors', 14.50),
    ('Bicycle Helmet', 'Hard shell helmet that protects the head when cycling', 'sports', 45.00),
    ('Wristwatch', 'Analog watch with a leather strap that tells the time', 'apparel', 99.00),
    ('Winter Gloves', 'Knitted gloves that keep hands warm in the cold', 'apparel', 17.00),
    ('Board Game', 'Strategy game for the family to play around a table', 'toys', 30.00),
    ('Jigsaw Puzzle', 'A thousand cardboard pieces that make a landscape picture', 'toys', 15.00),
    ('Hammock', 'Woven fabric bed hung between two trees for resting outdoors', 'outdoors', 55.00),
    ('Luggage Tag', 'Label with your name and address to attach to a suitcase', 'travel', 5.00);
