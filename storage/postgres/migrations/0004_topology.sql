-- Topology index: per (target, kind, item) the newest topo.* event's payload, kept by
-- storage.pg_topology in each batch's transaction; GET /v1/topology/* reads only this.
-- Versions (fixed-microsecond timestamp, event_id, content digest) compare in the "C"
-- collation, by code point, exactly as storage.topology orders them in Python.
CREATE TABLE topology (
    target     text COLLATE "C" NOT NULL,
    kind       text COLLATE "C" NOT NULL,   -- summary | area | subsystem | dependency
    item       text COLLATE "C" NOT NULL,   -- '' for the summary
    version_ts text COLLATE "C" NOT NULL,
    event_id   text COLLATE "C" NOT NULL,
    digest     text COLLATE "C" NOT NULL,
    payload    jsonb NOT NULL,
    PRIMARY KEY (target, kind, item)
);

-- Index what the log already holds, with the same keys and versions as
-- storage.topology (item rules in its docstring).
WITH topo AS (
    SELECT
        CASE WHEN json_typeof(payload -> 'target_id') = 'string'
                  AND length(payload ->> 'target_id') BETWEEN 1 AND 255
             THEN payload ->> 'target_id' ELSE target END AS target,
        CASE event_type
            WHEN 'topo.indexed' THEN 'summary'
            WHEN 'topo.area.discovered' THEN 'area'
            WHEN 'topo.subsystem.discovered' THEN 'subsystem'
            ELSE 'dependency' END AS kind,
        event_id, ts_text, digest, payload
    FROM events
    WHERE event_type IN ('topo.indexed', 'topo.area.discovered', 'topo.subsystem.discovered',
                         'topo.dependency.discovered')
), keyed AS (
    SELECT target, kind,
        CASE
            WHEN kind = 'summary' THEN ''
            WHEN kind = 'area' AND json_typeof(payload -> 'area_id') = 'string'
                 AND length(payload ->> 'area_id') BETWEEN 1 AND 600
                THEN payload ->> 'area_id'
            WHEN kind = 'subsystem' AND json_typeof(payload -> 'subsystem_id') = 'string'
                 AND length(payload ->> 'subsystem_id') BETWEEN 1 AND 600
                THEN payload ->> 'subsystem_id'
            WHEN kind = 'dependency'
                 AND json_typeof(payload -> 'from_subsystem_id') = 'string'
                 AND json_typeof(payload -> 'to_subsystem_id') = 'string'
                 AND length(payload ->> 'from_subsystem_id') BETWEEN 1 AND 255
                 AND length(payload ->> 'to_subsystem_id') BETWEEN 1 AND 255
                THEN (payload ->> 'from_subsystem_id') || ' -> ' || (payload ->> 'to_subsystem_id')
            ELSE 'event:' || event_id
        END AS item,
        CASE WHEN length(ts_text) = 20 THEN left(ts_text, 19) || '.000000Z' ELSE ts_text END
            AS version_ts,
        event_id, digest, payload::jsonb AS payload
    FROM topo
)
INSERT INTO topology (target, kind, item, version_ts, event_id, digest, payload)
SELECT DISTINCT ON (target COLLATE "C", kind COLLATE "C", item COLLATE "C")
    target, kind, item, version_ts, event_id, digest, payload
FROM keyed
ORDER BY target COLLATE "C", kind COLLATE "C", item COLLATE "C",
    version_ts COLLATE "C" DESC, event_id COLLATE "C" DESC, digest COLLATE "C" DESC;
