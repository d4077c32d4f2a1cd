"""Bad-input suite: hypothesis fuzzing of the ingest body path, auth and query endpoints."""
