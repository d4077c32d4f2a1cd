-- Initial PostgreSQL schema of the event log and projected graph (docs/design-notes.md).
-- Applied by storage.pg_migrations under an advisory lock; recorded in schema_migrations.

CREATE TABLE events (
    gid          bigserial PRIMARY KEY,          -- global insertion order (cursor of list_events)
    partition    integer     NOT NULL,
    seq          bigint      NOT NULL,
    event_id     text        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    ts           timestamptz NOT NULL,
    ts_text      text        NOT NULL,           -- the normalised string the hash covers
    actor_id     text,
    payload      jsonb       NOT NULL,
    bundle_id    text        NOT NULL,
    target       text        NOT NULL,
    received_at  text        NOT NULL,
    prev_hash    text        NOT NULL,
    hash         text        NOT NULL,
    digest       text        NOT NULL,
    task_id      text,
    attempt_id   text,
    UNIQUE (partition, seq)
);
CREATE INDEX events_task_idx ON events (task_id, gid) WHERE task_id IS NOT NULL;
CREATE INDEX events_attempt_idx ON events (attempt_id, gid) WHERE attempt_id IS NOT NULL;
CREATE INDEX events_type_idx ON events (event_type, gid);
CREATE INDEX events_target_idx ON events (target, gid);
CREATE INDEX events_failures_idx ON events (gid)
    WHERE event_type IN ('attempt.failed', 'task.failed');

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

CREATE TABLE heads (
    partition integer PRIMARY KEY,
    seq       bigint  NOT NULL,
    hash      text    NOT NULL
);

CREATE TABLE nodes (
    type      text  NOT NULL,
    id        text  NOT NULL,
    vals      jsonb NOT NULL,
    vers      jsonb NOT NULL,
    target    text,
    status    text,
    last_seen text  NOT NULL DEFAULT '',
    task_id   text,
    PRIMARY KEY (type, id)
);
CREATE INDEX nodes_last_seen_idx ON nodes (type, last_seen DESC, id);
CREATE INDEX nodes_target_idx ON nodes (type, target, last_seen DESC, id);
CREATE INDEX nodes_status_idx ON nodes (type, status, last_seen DESC, id);
CREATE INDEX nodes_task_idx ON nodes (type, task_id);

CREATE TABLE edges (
    type     text NOT NULL,
    src_type text NOT NULL,
    src      text NOT NULL,
    dst_type text NOT NULL,
    dst      text NOT NULL,
    PRIMARY KEY (type, src_type, src, dst_type, dst)
);
CREATE INDEX edges_dst_idx ON edges (type, dst_type, dst, src_type);

-- Graph summary counters, one row per (writer partition, kind, type) so that writers of
-- different partitions never contend on one counter row; the summary sums a few rows.
CREATE TABLE graph_counts (
    partition integer NOT NULL,
    kind      text    NOT NULL,   -- 'node' | 'edge'
    type      text    NOT NULL,
    n         bigint  NOT NULL,
    PRIMARY KEY (partition, kind, type)
);

CREATE TABLE artifacts (
    rid         bigserial PRIMARY KEY,
    bundle_id   text NOT NULL,
    attempt_id  text,
    artifact_id text NOT NULL,
    sha256      text,
    kind        text,
    uri         text,
    size        bigint
);
CREATE UNIQUE INDEX artifacts_bundle_uq ON artifacts (bundle_id, artifact_id);
CREATE INDEX artifacts_attempt_idx ON artifacts (attempt_id, rid);
