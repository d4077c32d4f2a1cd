"""When to post again, and after how long: the retries a server would choose.

Pipeline position: between the sender and the transport. 503 and 429 come with
``Retry-After``, which is honoured (capped at :attr:`Backoff.max_retry_after`); connection
errors, timeouts, 408 and other 5xx back off exponentially with full jitter (a uniform
delay between 0 and ``min(cap, base * 2**attempt)``, so a fleet of workers refused at once
does not come back at once); any other 4xx is permanent. Re-posting is always safe: the
control plane keys events by ``event_id`` and content, so a bundle that was stored although
its answer got lost is dropped as a duplicate the second time.
"""

from __future__ import annotations

import http.client
import random
from dataclasses import dataclass, field
from enum import Enum

from leviathan_client.transport import Answer


class Verdict(Enum):
    DONE = "done"  # 2xx: stored (or queued durably)
    RETRY = "retry"
    REJECTED = "rejected"  # permanent 4xx: never posted again


def verdict(outcome: Answer | BaseException) -> Verdict:
    if isinstance(outcome, BaseException):
        return Verdict.RETRY
    if outcome.ok:
        return Verdict.DONE
    return Verdict.RETRY if outcome.retryable else Verdict.REJECTED


# what a post may raise instead of answering: all of them are worth another try
TRANSIENT = (OSError, http.client.HTTPException)


@dataclass
class Backoff:
    """Delays between attempts at one bundle."""

    base: float = 0.25
    cap: float = 30.0
    max_retry_after: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, outcome: Answer | BaseException) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        if isinstance(outcome, Answer) and outcome.retry_after is not None:
            return min(outcome.retry_after, self.max_retry_after)
        return self.rng.uniform(0.0, min(self.cap, self.base * 2 ** min(attempt, 30)))
