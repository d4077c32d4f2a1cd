-- Event-id reuse is a revision, not a conflict (docs/design-notes.md, "Duplicates and
-- revisions"): real workers post deterministic ids (bootstrap-{target}-started, file-{sha})
-- again with new content, and every such event is kept. One row per revision:
--   * revision numbers 1, 2, ... per event_id; every row stored before is revision 1 (the
--     old unique key allowed one row per id). ADD COLUMN with a constant default does not
--     rewrite the table or fire the append-only row triggers.
--   * the unique key moves from event_id to (event_id, revision). Writers assign
--     top + 1 of the revisions they read, so a writer whose read was stale (another
--     partition's writer stored a revision of the same id meanwhile) is refused by this
--     key and retries; that also keeps (event_id, digest) unique, since the writer of
--     revision r had seen revisions 1..r-1 and dropped content equal to any of them.
--     Its btree also serves the writers' lookup of stored digests by event_id.
ALTER TABLE events ADD COLUMN revision integer NOT NULL DEFAULT 1;
ALTER TABLE events ADD CONSTRAINT events_event_id_revision_key UNIQUE (event_id, revision);
ALTER TABLE events DROP CONSTRAINT events_event_id_key;
