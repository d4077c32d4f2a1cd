-- Graph node values keep the exact JSON text the projection wrote, as event payloads do
-- since 0002. jsonb stores numbers as numeric and prints a large double by its shortest
-- digits padded with zeros: 4.198650726121262e16 (exactly 41986507261212624) came back as
-- the integer 41986507261212620, so a node read back differed from the fold of its events
-- (found by tests/storage/test_schema_edges.py). No query uses jsonb operators on nodes;
-- the query API reads vals/vers whole. The table is rewritten once, at upgrade.
ALTER TABLE nodes
    ALTER COLUMN vals TYPE json USING vals::json,
    ALTER COLUMN vers TYPE json USING vers::json;
