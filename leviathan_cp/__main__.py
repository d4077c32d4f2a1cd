"""``python -m leviathan_cp``: same as the ``leviathan-cp`` console script."""

from __future__ import annotations

import sys

from leviathan_cp.cli import main

if __name__ == "__main__":
    sys.exit(main())
