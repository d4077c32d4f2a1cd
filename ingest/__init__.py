"""Ingest tier: stateless aiohttp front end that authenticates, validates and queues
event bundles on Redis streams, and serves the query API from storage."""
