"""Ingest tier: stateless aiohttp front end that authenticates, validates and queues
event bundles on Redis streams (the read API is the query tier's, mounted beside it by
``leviathan-cp ingest`` unless reads have their own processes)."""
