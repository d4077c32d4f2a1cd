"""Consumer tier: arq-hosted writers that drain the Redis streams into storage,
acking only after commit (at-least-once), with reclaim, dead letters and trimming."""
