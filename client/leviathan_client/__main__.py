"""``python -m leviathan_client``: the ``leviathan-client`` command."""

from leviathan_client.cli import main

raise SystemExit(main())
