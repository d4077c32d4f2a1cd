"""What must hold after every chaos scenario, checked against storage itself.

Pipeline position: the far end of the pipeline. After the queue drained and both tiers
stopped, the test process opens the same store the consumer wrote and checks: every event
id that got a 2xx is stored exactly once (0 lost, 0 duplicated), nothing is stored that no
client sent, nothing went to a dead stream but what the scenario planted there, every
partition's hash chain verifies and together the chains cover every stored event, and the
stored graph equals :func:`storage.projection.project` applied to the stored events. On the
client side: no 5xx other than 503/504, each with ``Retry-After``, no request timed out
(a hang), and only the failure kinds the scenario allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.base import StoredEvent
from storage.config import create_store
from storage.projection import Graph, project
from tests.chaos.chaos_load import LoadClient
from tests.chaos.chaos_stack import PARTITIONS, Stack

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Audit:
    stored: int
    lost: int
    duplicated: int
    phantom: int
    chain_problems: list[str]
    chained: int
    graph_equal: bool
    graph_note: str
    dead_letters: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "phantom": self.phantom,
            "chains_ok": not self.chain_problems,
            "graph_equal": self.graph_equal,
            "dead_letters": self.dead_letters,
        }


def _graph_diff(stored: Graph, expected: Graph) -> str:
    extra = stored.nodes.keys() - expected.nodes.keys()
    missing = expected.nodes.keys() - stored.nodes.keys()
    differ = [
        k
        for k in stored.nodes.keys() & expected.nodes.keys()
        if stored.nodes[k] != expected.nodes[k]
    ]
    return (
        f"nodes only stored {sorted(extra)[:3]} ({len(extra)}), only projected "
        f"{sorted(missing)[:3]} ({len(missing)}), differing {differ[:3]} ({len(differ)}); "
        f"edges only stored {len(stored.edges - expected.edges)}, "
        f"only projected {len(expected.edges - stored.edges)}"
    )


async def audit(stack: Stack, load: LoadClient) -> Audit:
    """Storage against what the client saw; call with both tiers stopped."""
    dead = await stack.dead_letters()
    store = create_store(stack.settings())
    await store.open()
    try:
        events: list[StoredEvent] = [e async for e in store.iter_events()]
        chains = [await store.verify_chain(p) for p in range(PARTITIONS)]
        stored_graph = await store.graph()
    finally:
        await store.close()
    counts = Counter(e.event_id for e in events)
    expected = project(Graph(), events)
    return Audit(
        stored=len(counts),
        lost=len(load.accepted_ids - counts.keys()),
        duplicated=sum(n - 1 for n in counts.values()),
        phantom=len(counts.keys() - load.sent_ids),
        chain_problems=[f"partition {c.partition}: {c.reason}" for c in chains if not c.ok],
        chained=sum(c.checked for c in chains),
        graph_equal=stored_graph == expected,
        graph_note="" if stored_graph == expected else _graph_diff(stored_graph, expected),
        dead_letters=dead,
    )


def assert_stored_exactly_once(result: Audit, load: LoadClient, dead_letters: int = 0) -> None:
    """Every accepted event stored once, nothing else; ``dead_letters`` entries (those the
    scenario planted on purpose) and no more in the dead streams."""
    assert load.accepted_ids, "the load client never got a 2xx: the scenario proved nothing"
    assert result.lost == 0, f"{result.lost} events answered 2xx are not in storage"
    assert result.duplicated == 0, f"{result.duplicated} event ids are stored more than once"
    assert result.phantom == 0, f"{result.phantom} stored events were never sent"
    assert result.dead_letters == dead_letters, (
        f"{result.dead_letters} entries were dead-lettered, expected {dead_letters}"
    )
    assert not result.chain_problems, result.chain_problems
    assert result.chained == result.stored, (
        f"the chains cover {result.chained} events, storage holds {result.stored}"
    )
    assert result.graph_equal, result.graph_note


def assert_client_saw(load: LoadClient, allowed: set[str]) -> None:
    """No 500s, no hangs, every 503 with ``Retry-After``; other failures only if ``allowed``.

    A 504 (written to Redis, unconfirmed: the bundle may or may not be queued) is allowed
    wherever a 503 is: a pipeline in flight when Redis dies gets it.
    """
    if "503" in allowed:
        allowed = {*allowed, "504"}
    seen = load.statuses()
    assert seen["timeout"] == 0, f"{seen['timeout']} requests hung until the client timeout"
    server_errors = {s: n for s, n in seen.items() if s.startswith("5") and s not in allowed}
    assert not server_errors, f"server errors: {server_errors}"
    bare = [o for o in load.outcomes if o.status in ("503", "504") and not o.retry_after]
    assert not bare, f"{len(bare)} answers 503/504 without Retry-After"
    unexpected = {s: n for s, n in seen.items() if s not in {"200", "202", *allowed}}
    assert not unexpected, f"unexpected answers {unexpected} (allowed: 2xx, {sorted(allowed)})"


async def finish(
    stack: Stack, load: LoadClient, report: Report, dead_letters: int = 0, **extra: Any
) -> None:
    """Drain, stop both tiers (exit 0), audit storage and the client's answers."""
    await stack.wait_drained(120)
    codes = await stack.stop()
    result = await audit(stack, load)
    report({**load.summary(), **result.as_dict(), **extra, "exit_codes": codes})
    assert_stored_exactly_once(result, load, dead_letters)
    assert codes == {"ingest": 0, "consumer": 0}, codes
