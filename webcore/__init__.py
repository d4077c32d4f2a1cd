"""The HTTP plumbing the ingest and query tiers share: tokens and roles, error and auth
middlewares, error and response models, the store context, serving a process."""
