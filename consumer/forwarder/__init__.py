"""Spider forwarding: every accepted bundle POSTed to Spider at least once, in order per
partition (consumer group ``spider``), beside the writers or as ``leviathan-cp forward``."""
