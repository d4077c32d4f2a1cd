"""The read tier: the query API, the operator console and /openapi.json, reading storage only."""
