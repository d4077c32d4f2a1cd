"""A fixed corpus of ingest requests and what the server answered, stored, and counted.

Pipeline position: the equivalence check of the ingest hot path (tests/ingest/test_corpus.py).
Each case is one ``POST /v1/events/ingest`` (body bytes and headers); observing it through
the real app over fakeredis gives its status, response body, and stream entries (every
field but ``received_at``, which is a clock). After the whole sequence, ``/metrics`` gives
each sample's name and labels, and its value where it does not depend on time.

``tests/ingest/corpus/expected.json`` holds those observations as recorded once from the
code before the ingest's validation and metrics were reworked; the test replays the cases
and compares. Regenerate only on purpose (a deliberate change of the contract):
``python -m tests.ingest.corpus_support --write``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fakeredis import FakeAsyncRedis
from prometheus_client.parser import text_string_to_metric_families

from ingest.app import HANDLER_ARGS, create_app
from ingest.settings import IngestSettings
from storage.queue import StreamLayout, resolve

TOKEN = "corpus-token"
PARTITIONS = 4
URL = "/v1/events/ingest"
EXPECTED = Path(__file__).parent / "corpus" / "expected.json"
JSON = "application/json"
# samples whose value is a clock or the host's, not the request sequence's
TIMED = ("ingest_request_seconds_bucket", "ingest_request_seconds_sum")
UNSTABLE_GAUGES = ("ingest_redis_used_memory_bytes", "ingest_queue_lag")


def _event(i: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"evt-{i}",
        "event_type": "attempt.progress",
        "timestamp": "2026-11-28T12:00:00Z",
        "actor_id": "worker-1",
        "payload": {"attempt_id": "att-1", "step": i, "status": "running"},
    }
    base.update(fields)
    return base


def _bundle(bundle_id: str, events: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"target": "repo-a", "bundle_id": bundle_id, "events": events, **extra})


def _with_payload(bundle_id: str, payload_text: str, n: int = 3) -> bytes:
    """A bundle whose last event's payload is the literal JSON ``payload_text``."""
    events = [_event(i) for i in range(n - 1)] + [_event(n - 1, payload={})]
    text = _bundle(bundle_id, events).decode()
    return text.replace('"payload":{}}]', f'"payload":{payload_text}}}]', 1).encode()


def _with_timestamp(bundle_id: str, stamp_text: str) -> bytes:
    """A two-event bundle whose second timestamp is the literal JSON ``stamp_text``."""
    events = [_event(0), _event(1, timestamp="@@")]
    return _bundle(bundle_id, events).replace(b'"@@"', stamp_text.encode())


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


def cases() -> list[dict[str, Any]]:
    """Name, body and headers of every request, in the order they are sent."""
    out: list[dict[str, Any]] = []

    def add(name: str, body: bytes, **headers: str) -> None:
        out.append({"name": name, "body": body, "headers": headers})

    add("plain-20", _bundle("b-plain", [_event(i) for i in range(20)]))
    add("plain-1", _bundle("b-one", [_event(0)]))
    add(
        "escapes",
        _with_payload(
            "b-esc",
            r'{"s":"line\nbreak \"q\" \\ \/ \u00e9 \ud83d\ude00 \t","k\u00e9y":"\u2028",'
            r'"attempt_id":"a\u00e9"}',
        ),
    )
    add("nul-value", _with_payload("b-nul", r'{"note":"a\u0000b"}'))
    add("nul-key", _with_payload("b-nulkey", r'{"a\u0000":1}'))
    add("nul-deep", _with_payload("b-nuldeep", r'{"x":[1,{"y":["\u0000"]}]}'))
    add("escaped-backslash-u0000", _with_payload("b-bsu", r'{"note":"\\u0000"}'))
    add("nul-event-id", _bundle("b-nulid", [_event(0, event_id="e\x00")]))
    add("offset-plus", _with_timestamp("b-off1", '"2026-11-28T12:00:00+05:30"'))
    add("offset-minus-micro", _with_timestamp("b-off2", '"2026-11-28T23:59:59.123456-01:00"'))
    add("offset-zero", _with_timestamp("b-off3", '"2026-11-28T12:00:00+00:00"'))
    add("zero-fraction", _with_timestamp("b-frac0", '"2026-11-28T12:00:00.000000Z"'))
    add("half-second", _with_timestamp("b-frac5", '"2026-11-28T12:00:00.5Z"'))
    add("naive", _with_timestamp("b-naive", '"2026-11-28T12:00:00"'))
    add("date-only", _with_timestamp("b-date", '"2026-11-28"'))
    add("epoch-int", _with_timestamp("b-epoch", "1764331200"))
    add("epoch-float", _with_timestamp("b-epochf", "1764331200.25"))
    add("epoch-text", _with_timestamp("b-epocht", '"1764331200"'))
    add("epoch-ms", _with_timestamp("b-epochms", "1764331200123"))
    add("year-0-in-utc", _with_timestamp("b-y0", '"0001-01-01T00:30:00+01:00"'))
    add("year-10000-in-utc", _with_timestamp("b-y10k", '"9999-12-31T23:30:00-01:00"'))
    add("year-1", _with_timestamp("b-y1", '"0001-01-01T01:30:00+01:00"'))
    add("bad-timestamp", _with_timestamp("b-badts", '"yesterday"'))
    add("null-timestamp", _with_timestamp("b-nullts", "null"))
    add("int64-max-id", _with_payload("b-i64", f'{{"attempt_id":{2**63 - 1},"pr_number":-1}}'))
    add("int64-min-id", _with_payload("b-i64n", f'{{"task_id":{-(2**63)}}}'))
    add("2^63-id", _with_payload("b-2p63", f'{{"attempt_id":{2**63}}}'))
    add("2^64-id", _with_payload("b-2p64", f'{{"pr_number":{2**64}}}'))
    add("below-int64-id", _with_payload("b-neg", f'{{"target_id":{-(2**63) - 1}}}'))
    add("bigint-payload", _with_payload("b-big", f'{{"files":{2**64},"n":{-(2**63) - 1}}}'))
    add("bigint-10^30-payload", _with_payload("b-big30", '{"files":' + "1" + "0" * 30 + "}"))
    add("bigint-400-digits", _with_payload("b-big400", '{"files":1' + "0" * 400 + "}"))
    add("nan", _with_payload("b-nan", '{"x":NaN}'))
    add("infinity", _with_payload("b-inf", '{"x":Infinity}'))
    add("1e400", _with_payload("b-1e400", '{"x":1e400}'))
    add("float-id", _with_payload("b-fid", '{"attempt_id":1.0}'))
    add("bool-id", _with_payload("b-bid", '{"pr_number":true}'))
    add("list-id", _with_payload("b-lid", '{"artifact_id":["a"]}'))
    add("object-id", _with_payload("b-oid", '{"task_id":{"a":1}}'))
    add("null-ids", _with_payload("b-nid", '{"attempt_id":null,"task_id":null,"status":null}'))
    add("empty-id", _with_payload("b-eid", '{"attempt_id":""}'))
    add("id-255", _with_payload("b-255", '{"attempt_id":"' + "x" * 255 + '"}'))
    add("id-256", _with_payload("b-256", '{"attempt_id":"' + "x" * 256 + '"}'))
    add("id-256-astral", _with_payload("b-256a", '{"target_id":"' + "\U0001f600" * 256 + '"}'))
    add("status-256", _with_payload("b-s256", '{"status":"' + "s" * 256 + '"}'))
    add("status-non-string", _with_payload("b-sns", '{"status":[1,2],"sha256":7,"target":{}}'))
    add(
        "roles-many",
        _bundle(
            "b-roles",
            [
                _event(0, payload={"attempt_id": "x" * 300, "task_id": 1.5}),
                _event(1, payload={"sha256": "y" * 256, "pr_number": False}),
                _event(2, payload={"target": "t" * 999}),
            ],
        ),
    )
    add(
        "role-and-field-errors",
        _bundle(
            "b-mixed",
            [
                _event(0, payload={"attempt_id": "x" * 300}),
                _event(1, timestamp="not-a-time"),
            ],
        ),
    )
    add(
        "role-and-artifact-error",
        _bundle(
            "b-mixed2",
            [_event(0, payload={"attempt_id": [1]})],
            artifacts=[{"sha256": "ab", "size": -1}],
        ),
    )
    add("duplicate-keys", _with_payload("b-dup", '{"attempt_id":"a","attempt_id":"b","k":1,"k":2}'))
    add(
        "duplicate-top-keys",
        b'{"target":"t1","bundle_id":"b-dupt","target":"t2","events":[],'
        b'"events":[{"event_id":"e","event_type":"x","timestamp":"2026-11-28T12:00:00Z",'
        b'"payload":{}}]}',
    )
    add(
        "artifacts",
        _bundle(
            "b-art",
            [_event(0)],
            artifacts=[
                {"sha256": "ab" * 32, "kind": "log", "uri": "s3://x", "size": 12, "extra": [1]},
                {"sha256": "cd", "artifact_id": "art-1", "size": 2**63 - 1},
            ],
        ),
    )
    add(
        "artifact-size-2^63",
        _bundle("b-as", [_event(0)], artifacts=[{"sha256": "a", "size": 2**63}]),
    )
    add(
        "artifact-size-10^30",
        _with_payload("b-as30", "{}").replace(
            b'"events"', b'"artifacts":[{"sha256":"a","size":1' + b"0" * 30 + b'}],"events"', 1
        ),
    )
    add("artifacts-null", _bundle("b-an", [_event(0)], artifacts=None))
    add("unknown-keys", _bundle("b-unk", [_event(0, extra="x", more={"a": 1})], flavour="x"))
    add("actor-null", _bundle("b-actn", [_event(0, actor_id=None)]))
    add(
        "actor-missing",
        _bundle("b-actm", [{k: v for k, v in _event(0).items() if k != "actor_id"}]),
    )
    add("actor-256", _bundle("b-act256", [_event(0, actor_id="a" * 256)]))
    add("event-id-255", _bundle("b-eid255", [_event(0, event_id="e" * 255)]))
    add("event-id-256", _bundle("b-eid256", [_event(0, event_id="e" * 256)]))
    add("event-id-empty", _bundle("b-eidempty", [_event(0, event_id="")]))
    add("event-type-101", _bundle("b-et101", [_event(0, event_type="t" * 101)]))
    add("event-id-int", _bundle("b-eidint", [_event(0, event_id=7)]))
    add("payload-list", _bundle("b-plist", [_event(0, payload=[1])]))
    add(
        "payload-missing",
        _bundle("b-pmiss", [{k: v for k, v in _event(0).items() if k != "payload"}]),
    )
    add("events-empty", _bundle("b-empty", []))
    add("events-not-list", b'{"target":"t","bundle_id":"b-enl","events":{"a":1}}')
    add("missing-fields", b'{"events":[{}]}')
    add("target-256", orjson.dumps({"target": "t" * 256, "bundle_id": "b-t256", "events": []}))
    add("body-array", b"[1,2]")
    add("body-null", b"null")
    add("bad-json", b'{"target": ')
    add("bad-utf8", b'{"target":"\xff","bundle_id":"b","events":[]}')
    add("lone-surrogate", _with_payload("b-sur", r'{"x":"\ud800"}'))
    add("deep-254", _with_payload("b-d254", orjson.dumps(_nested(249)).decode()))
    add("deep-255", _with_payload("b-d255", orjson.dumps(_nested(252)).decode()))
    add("deep-1025", _with_payload("b-d1025", "[" * 1025 + "]" * 1025))
    add(
        "gzip",
        gzip.compress(_bundle("b-gz", [_event(i) for i in range(5)]), mtime=0),
        **{"Content-Encoding": "gzip"},
    )
    add("bad-gzip", b"\x1f\x8b\x08\x00garbage", **{"Content-Encoding": "gzip"})
    add("wrong-type", _bundle("b-wt", [_event(0)]), **{"Content-Type": "text/plain"})
    add(
        "latin1",
        _bundle("b-l1", [_event(0)]),
        **{"Content-Type": "application/json; charset=latin-1"},
    )
    good = _bundle("b-auth", [_event(0)])
    add("no-token", good, Authorization="")
    add("basic-scheme", good, Authorization=f"Basic {TOKEN}")
    add("bad-token", good, Authorization="Bearer not-the-token")
    add("token-prefix", good, Authorization=f"Bearer {TOKEN[:-1]}")
    add("token-longer", good, Authorization=f"Bearer {TOKEN}x")
    add("lowercase-bearer", good, Authorization=f"bearer {TOKEN}")
    add("token-spaces", good, Authorization=f"Bearer   {TOKEN}  ")
    add("bearer-only", good, Authorization="Bearer")
    add("plain-20-again", _bundle("b-plain", [_event(i) for i in range(20)]))
    return out


def _headers(case: dict[str, Any]) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": JSON}
    headers.update(case["headers"])
    if not headers["Authorization"]:
        del headers["Authorization"]
    return headers


async def _entries(redis: FakeAsyncRedis, layout: StreamLayout) -> dict[bytes, Any]:
    found: dict[bytes, Any] = {}
    for p in range(layout.partitions):
        for entry_id, fields in await resolve(redis.xrange(layout.stream(p))):
            found[entry_id] = (p, fields)
    return found


def _metric_samples(text: str) -> list[list[Any]]:
    """Every family as ``[name, type, help]``, then every sample as ``[name, labels,
    value]``; ``value`` None where it is a clock's or the host's."""
    families: list[list[Any]] = []
    out: list[list[Any]] = []
    for family in text_string_to_metric_families(text):
        families.append([family.name, family.type, family.documentation])
        for sample in family.samples:
            unstable = (
                sample.name in TIMED
                or sample.name.endswith("_created")
                or sample.name in UNSTABLE_GAUGES
            )
            value = None if unstable else sample.value
            out.append([sample.name, dict(sorted(sample.labels.items())), value])
    return sorted(families) + sorted(out, key=lambda s: (s[0], sorted(s[1].items())))


async def observe() -> dict[str, Any]:
    """Send every case to a fresh app; what each answered and queued, then the metrics."""
    redis = FakeAsyncRedis()
    settings = IngestSettings(
        token=TOKEN, partitions=PARTITIONS, drain_seconds=0, lag_cache_seconds=0
    )
    layout = StreamLayout(partitions=PARTITIONS)
    server = TestServer(create_app(settings, redis=redis))
    await server.start_server(**HANDLER_ARGS)
    client: TestClient[web.Request, web.Application] = TestClient(server)
    await client.start_server()
    results: list[dict[str, Any]] = []
    try:
        seen = await _entries(redis, layout)
        for case in cases():
            resp = await client.post(URL, data=case["body"], headers=_headers(case))
            text = await resp.read()
            now = await _entries(redis, layout)
            new = [now[k] for k in sorted(now.keys() - seen.keys())]
            seen = now
            results.append(
                {
                    "name": case["name"],
                    "status": resp.status,
                    "body": text.decode(),
                    "www_authenticate": resp.headers.get("WWW-Authenticate"),
                    "entries": [
                        {
                            "partition": p,
                            **{
                                k.decode(): v.decode()
                                for k, v in sorted(fields.items())
                                if k != b"received_at"
                            },
                        }
                        for p, fields in new
                    ],
                }
            )
        metrics = (await (await client.get("/metrics")).read()).decode()
    finally:
        await client.close()
    return {"cases": results, "metrics": _metric_samples(metrics)}


def bodies_digest() -> list[dict[str, str]]:
    """The request bytes of each case (recorded too, so a changed case is noticed)."""
    return [{"name": c["name"], "body": base64.b64encode(c["body"]).decode()} for c in cases()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the ingest corpus' expected answers.")
    parser.add_argument("--write", action="store_true", help=f"write {EXPECTED}")
    args = parser.parse_args(argv)
    observed = asyncio.run(observe())
    observed["requests"] = bodies_digest()
    text = orjson.dumps(observed, option=orjson.OPT_INDENT_2) + b"\n"
    if args.write:
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_bytes(text)
    else:
        print(text.decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
