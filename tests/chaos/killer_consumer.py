"""``python -m tests.chaos.killer_consumer``: the real consumer process, except that its
store SIGKILLs the process whenever a batch it is about to write holds an event of type
:data:`KILLER` — a stand-in for an entry that kills its writer (an OOM kill, a segfault
in a C extension). Everything else is ``python -m consumer`` unchanged: same settings,
same worker; only the store the worker creates is wrapped.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from storage.base import BatchResult, EventStore
from storage.config import StorageSettings
from storage.config import create_store as real_create_store
from storage.envelope import Envelope

KILLER = "chaos.kill-writer"


class KillingStore:
    """Wraps the real store; dies at once on a batch holding a :data:`KILLER` event."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        if any(e.event_type == KILLER for env in envelopes for e in env.bundle.events):
            os.kill(os.getpid(), signal.SIGKILL)
        return await self.inner.write_batch(partition, envelopes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def create_store(settings: StorageSettings, *, writer: bool = False) -> EventStore:
    return KillingStore(real_create_store(settings, writer=writer))


if __name__ == "__main__":
    from consumer import worker
    from consumer.__main__ import main

    setattr(worker, "create_store", create_store)  # noqa: B010 (the name worker bound)
    sys.exit(main())
