"""The ``leviathan-cp`` command: one entry point whose subcommands start each process."""
