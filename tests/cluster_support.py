"""A private Redis Cluster for tests: three masters with one replica each, on loopback.

Pipeline position: outside the pipeline; gives the cluster tests a real sharded queue
(``redis-server --cluster-enabled yes`` nodes joined by ``redis-cli --cluster create``) so
MOVED/ASK, cross-slot refusals and failovers are the server's own, never a fake's. Each
node runs in its own temp dir; every child dies with the test process (see
``tests.chaos.chaos_support.Child``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from leviathan_cp.ports import free_port
from tests.chaos.chaos_support import Child, wait_port

MASTERS = 3
REPLICAS_PER_MASTER = 1
NODE_TIMEOUT_MS = 2000  # a failed master is replaced by its replica within a few seconds


class ClusterNode:
    """One ``redis-server`` in cluster mode; restartable on the same port and dir."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port(paired=10000)
        self.dir = workdir / str(self.port)
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.dir), "--cluster-enabled", "yes"]
        argv += ["--cluster-config-file", "nodes.conf"]
        argv += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        argv += ["--daemonize", "no"]
        self.child = Child(
            f"redis-cluster-{self.port}", argv, self.dir / "redis.log", dict(os.environ)
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.child.start()
        wait_port(self.port, 10, self.child, ping=b"PING\r\n")

    def crash(self) -> None:
        self.child.kill()

    def cli(self, *args: str, timeout: float = 30) -> str:
        """``redis-cli -p PORT ARGS…``; raises with its output when it fails."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout


class RedisClusterServers:
    """Six nodes (three masters, three replicas) joined into one cluster."""

    def __init__(self, workdir: Path) -> None:
        count = MASTERS * (1 + REPLICAS_PER_MASTER)
        self.nodes = [ClusterNode(workdir) for _ in range(count)]

    @property
    def url(self) -> str:
        """Seed list in the form ``LEVIATHAN_REDIS_URL`` takes in cluster mode."""
        return ",".join(f"redis://{n.address}" for n in self.nodes[:MASTERS])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.nodes[0].cli(
            "--cluster",
            "create",
            *(n.address for n in self.nodes),
            "--cluster-replicas",
            str(REPLICAS_PER_MASTER),
            "--cluster-yes",
            timeout=60,
        )
        self.wait_ok(30)

    def wait_ok(self, seconds: float, replicas: bool = True) -> None:
        """Until every live node reports ``cluster_state:ok``, the masters are three and
        (``replicas``) each has its replica attached and in sync — a replica still loading
        its first copy would not acknowledge a WAIT."""
        deadline = time.monotonic() + seconds
        last = ""
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                if not node.child.alive:
                    continue
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    states.append("cluster_state:ok" in node.cli("CLUSTER", "INFO", timeout=5))
            masters = self.masters()
            if states and all(states) and len(masters) == MASTERS:
                if not replicas or all(self._replicated(m) for m in masters):
                    return
                last = "replicas not in sync yet"
            else:
                last = f"{sum(states)}/{len(states)} nodes ok, {len(masters)} masters"
            time.sleep(0.2)
        raise RuntimeError(f"cluster not ok after {seconds} s ({last})")

    @staticmethod
    def _replicated(master: ClusterNode) -> bool:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            info = master.cli("INFO", "replication", timeout=5)
            wanted = f"connected_slaves:{REPLICAS_PER_MASTER}"
            return wanted in info and "state=online" in info
        return False

    def masters(self) -> list[ClusterNode]:
        """Live nodes that call themselves master and own slots."""
        found = []
        for node in self.nodes:
            if not node.child.alive:
                continue
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                for line in node.cli("CLUSTER", "NODES", timeout=5).splitlines():
                    fields = line.split()
                    if "myself" in fields[2] and "master" in fields[2] and len(fields) > 8:
                        found.append(node)
        return found

    def node_of_slot(self, slot: int) -> ClusterNode:
        """The live master currently serving ``slot``."""
        for node in self.masters():
            for line in node.cli("CLUSTER", "NODES", timeout=5).splitlines():
                fields = line.split()
                if "myself" not in fields[2]:
                    continue
                for part in fields[8:]:
                    if part.startswith("["):
                        continue  # a slot in migration
                    low, _, high = part.partition("-")
                    if int(low) <= slot <= int(high or low):
                        return node
        raise LookupError(f"no live master serves slot {slot}")

    def move_slot(self, slot: int, target: ClusterNode) -> None:
        """Move ``slot`` with its keys to master ``target`` by hand, as ``redis-cli
        --cluster reshard`` does: IMPORTING/MIGRATING, MIGRATE the keys, then SETSLOT NODE
        on every master. Clients see ASK during the move and MOVED after it."""
        source = self.node_of_slot(slot)
        if source is target:
            return
        source_id = source.cli("CLUSTER", "MYID").strip()
        target_id = target.cli("CLUSTER", "MYID").strip()
        target.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while True:
            keys = source.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
            if not keys:
                break
            source.cli("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys)
        for node in self.masters():
            node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

    def flush(self) -> None:
        for node in self.masters():
            node.cli("FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.crash()
