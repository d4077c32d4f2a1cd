-- Event payloads keep the exact JSON text the hash chain covered (docs/design-notes.md, "Event log and hash chain").
-- jsonb re-encodes numbers (numeric has no -0.0, so -0.0 came back as 0 and verify
-- reported a false tamper) and its text form is not what was hashed; json stores the
-- text as sent. Writers send payload_json bytes (sorted keys, compact). Rows written
-- before this migration become jsonb's text form, which parses to the same values they
-- were verified against until now. No index or query uses jsonb operators on payload.
-- The table rewrite takes an exclusive lock for its duration (once, at upgrade).
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;
