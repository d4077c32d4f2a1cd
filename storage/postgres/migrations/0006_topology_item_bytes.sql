-- Topology items bounded in bytes: storage.topology keys an item whose UTF-8 form is over
-- MAX_ITEM_BYTES (1536) by 'event:' || event_id, like an item over 600 characters, so the
-- primary key (target, kind, item) stays under the btree's 2704-byte row whatever the
-- characters (a 255-character target is up to 1020 bytes). Rows indexed before under such
-- an item are re-keyed here from the log, with the same rules and versions as
-- storage.topology (and migration 0004): each of their events gets its own row.
DELETE FROM topology WHERE octet_length(item) > 1536;

WITH topo AS (
    SELECT
        CASE WHEN json_typeof(payload -> 'target_id') = 'string'
                  AND length(payload ->> 'target_id') BETWEEN 1 AND 255
             THEN payload ->> 'target_id' ELSE target END AS target,
        CASE event_type
            WHEN 'topo.area.discovered' THEN 'area'
            WHEN 'topo.subsystem.discovered' THEN 'subsystem'
            ELSE 'dependency' END AS kind,
        event_id, ts_text, digest, payload
    FROM events
    WHERE event_type IN ('topo.area.discovered', 'topo.subsystem.discovered',
                         'topo.dependency.discovered')
), old_keys AS (
    SELECT target, kind,
        CASE
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
            ELSE ''
        END AS old_item,
        CASE WHEN length(ts_text) = 20 THEN left(ts_text, 19) || '.000000Z' ELSE ts_text END
            AS version_ts,
        event_id, digest, payload::jsonb AS payload
    FROM topo
)
INSERT INTO topology AS t (target, kind, item, version_ts, event_id, digest, payload)
SELECT DISTINCT ON (target COLLATE "C", kind COLLATE "C", 'event:' || event_id COLLATE "C")
    target, kind, 'event:' || event_id, version_ts, event_id, digest, payload
FROM old_keys
WHERE octet_length(old_item) > 1536
ORDER BY target COLLATE "C", kind COLLATE "C", 'event:' || event_id COLLATE "C",
    version_ts COLLATE "C" DESC, event_id COLLATE "C" DESC, digest COLLATE "C" DESC
ON CONFLICT (target, kind, item) DO UPDATE SET
    version_ts = excluded.version_ts, event_id = excluded.event_id,
    digest = excluded.digest, payload = excluded.payload
WHERE (excluded.version_ts, excluded.event_id, excluded.digest)
    > (t.version_ts, t.event_id, t.digest);
