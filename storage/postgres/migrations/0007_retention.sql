-- Retention (docs/operations.md, "Retention"): each partition's chain keeps a checkpoint
-- where it was cut (the last removed event's seq and hash, and when it arrived), and
-- only a retention transaction may delete events: it sets leviathan.retention = 'on'
-- for itself (SET LOCAL). UPDATE and TRUNCATE stay refused for everyone. The DELETE
-- check is a statement trigger (one call per batch, not one per removed row).

CREATE TABLE chain_checkpoints (
    partition   integer PRIMARY KEY,
    seq         bigint  NOT NULL,
    hash        text    NOT NULL,
    received_at text    NOT NULL
);

CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('leviathan.retention', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'events is append-only (% refused)', TG_OP;
END
$$;

DROP TRIGGER events_no_update ON events;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
