"""Free loopback ports for the processes that ``dev``, the tests and the benchmarks start.

Pipeline position: beside the pipeline. The dev supervisor picks ports for its private Redis,
PostgreSQL and the consumer's health endpoint; the tests and benchmarks do the same for every
stack they start.

The usual trick, binding port 0 and closing the socket, hands out a port from the kernel's
ephemeral range. That is the range every outgoing connection takes its local port from, so
between the probe and the child's own bind a connection to Redis or PostgreSQL can take the
port, and the child fails with "address already in use". Ports below the ephemeral range are
only ever taken by an explicit bind, so they are picked from there, at random (two processes
choosing at once rarely meet), and checked by binding them.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default; other kernels differ, and the bind check still holds there.
DEFAULT_EPHEMERAL = (32768, 60999)
LOWEST = 10000  # below this sit well-known and registered services worth not shadowing
ATTEMPTS = 200


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports, inclusive."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def candidate_ranges(ephemeral: tuple[int, int]) -> list[range]:
    """Port ranges outside ``ephemeral``, the wider first; empty if it covers them all."""
    low, high = ephemeral
    below = range(LOWEST, low) if low > LOWEST else range(0)
    above = range(max(high + 1, LOWEST), 65536)
    return sorted((r for r in (below, above) if len(r) > 0), key=len, reverse=True)


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, paired: int = 0) -> int:
    """A port on ``host`` that nothing listens on, outside the ephemeral range if it can be.

    With ``paired``, ``port + paired`` is free and outside that range too (a Redis Cluster
    node listens on its port and on its bus port, 10000 above).
    """
    outside = candidate_ranges(ephemeral_range())
    if outside:
        pick = random.SystemRandom()
        for _ in range(ATTEMPTS):
            port = pick.choice(outside[0])
            if paired and not any(port + paired in r for r in outside):
                continue
            if _bindable(port, host) and (not paired or _bindable(port + paired, host)):
                return port
    # A kernel whose ephemeral range covers every port: take what it hands out.
    for _ in range(ATTEMPTS):
        with socket.socket() as sock:
            sock.bind((host, 0))
            found: int = sock.getsockname()[1]
        if not paired or (found + paired < 65536 and _bindable(found + paired, host)):
            return found
    raise RuntimeError(f"no free port on {host} with a free port {paired} above it")
