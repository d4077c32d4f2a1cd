"""The disk spool: every bundle not yet acknowledged, as a file, until its 2xx.

Pipeline position: between ``Client.send`` and the sender thread. ``send`` writes the
encoded body to ``<spool>/proc-<pid>-<random>/<time_ns>-<pid>-<n>.json`` (written to a
``.tmp`` name, fsync'd, renamed, the folder fsync'd) before it returns; the sender deletes
the file after the 2xx, or after copying it to ``<spool>/rejected/`` with the server's answer
next to it (``<name>.answer.json``) when the answer was a permanent 4xx.

Two processes on one folder: each works in its own ``proc-*`` sub-folder and holds an
exclusive ``flock`` on its ``.lock`` file for as long as it runs. A client adopts every
sub-folder whose lock it can take (its owner exited or was killed: the kernel released the
lock) by renaming the files into its own folder: when it starts, so they are posted first,
oldest first (file names sort by creation time), and again whenever its queue has been empty
for ``adopt_interval`` seconds. A folder whose owner still runs is left alone.

Bounded: ``max_bytes`` of pending bundles over the whole folder (``rejected/`` is not
counted). The oldest are kept; a bundle that does not fit is refused with
:class:`~leviathan_client.errors.SpoolFull` before anything is written. POSIX only (fcntl).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from leviathan_client.errors import SpoolFull

PREFIX = "proc-"
REJECTED = "rejected"
LOCK = ".lock"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(folder: Path) -> int | None:
    """An fd holding the folder's exclusive lock, or None when another process holds it."""
    try:
        fd = os.open(folder / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def pending_files(root: Path) -> list[Path]:
    """Every pending bundle file under ``root`` (all sub-folders), oldest first."""
    files = [p for sub in root.glob(f"{PREFIX}*") if sub.is_dir() for p in sub.glob("*.json")]
    return sorted(files, key=lambda p: p.name)


def pending_bytes(root: Path) -> int:
    total = 0
    for path in pending_files(root):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue  # posted and deleted by its owner meanwhile
    return total


class Spool:
    """This process's sub-folder of a spool folder."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        (root / REJECTED).mkdir(exist_ok=True)
        # locked under a name adopters ignore, then renamed: no adopter can take a folder
        # between its creation and its lock (the lock follows the file into the new name)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging = root / f".new-{name}"
        staging.mkdir()
        fd = _try_lock(staging)
        if fd is None:
            raise OSError(f"cannot lock {staging}")
        self.dir = root / f"{PREFIX}{name}"
        os.replace(staging, self.dir)
        self._fd: int | None = fd
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._bytes = pending_bytes(root)

    def adopt(self) -> list[Path]:
        """Take over the files of every unlocked sub-folder; the files taken, oldest first."""
        taken: list[Path] = []
        for sub in sorted(self.root.glob(f"{PREFIX}*")):
            if sub == self.dir or not sub.is_dir():
                continue
            fd = _try_lock(sub)
            if fd is None:
                continue  # its owner is alive
            try:
                for path in sub.iterdir():
                    if path.suffix == ".json":
                        os.replace(path, self.dir / path.name)
                        taken.append(self.dir / path.name)
                    elif path.name != LOCK:
                        path.unlink(missing_ok=True)  # a .tmp its owner never finished
                (sub / LOCK).unlink(missing_ok=True)
                sub.rmdir()
            except OSError:
                pass  # another adopter raced us; what is left stays for the next one
            finally:
                os.close(fd)
        if taken:
            _fsync_dir(self.dir)
            with self._lock:
                self._bytes = pending_bytes(self.root)
        return sorted(taken, key=lambda p: p.name)

    def _reserve(self, size: int) -> None:
        with self._lock:
            if self._bytes + size > self.max_bytes:
                self._bytes = pending_bytes(self.root)  # other processes' files come and go
            if self._bytes + size > self.max_bytes:
                raise SpoolFull(
                    f"the spool {self.root} holds {self._bytes:,} bytes of unsent bundles; "
                    f"{size:,} more would pass max_spool_bytes={self.max_bytes:,}"
                )
            self._bytes += size

    def put(self, bodies: list[bytes]) -> list[Path]:
        """Write bodies durably (all or none fit); their paths, in order."""
        self._reserve(sum(len(b) for b in bodies))
        paths = []
        for body in bodies:
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):08d}.json"
            tmp = self.dir / f"{name}.tmp"
            with tmp.open("wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.dir / name)
            paths.append(self.dir / name)
        _fsync_dir(self.dir)
        return paths

    def _release(self, size: int) -> None:
        with self._lock:
            self._bytes = max(0, self._bytes - size)

    def done(self, path: Path, size: int) -> None:
        """The bundle was acknowledged: forget it (a lost unlink only means a duplicate)."""
        path.unlink(missing_ok=True)
        self._release(size)

    def reject(self, name: str, body: bytes, answer: dict[str, Any]) -> Path:
        """Keep a permanently refused bundle and the server's answer in ``rejected/`` (the
        pending file is removed by :meth:`done` once its whole bundle was answered)."""
        dest = self.root / REJECTED / name
        dest.write_bytes(body)
        (self.root / REJECTED / f"{name}.answer.json").write_text(json.dumps(answer, indent=2))
        return dest

    def close(self) -> None:
        """Release the lock; an empty folder is removed, a non-empty one awaits adoption."""
        if self._fd is None:
            return
        try:
            if not any(self.dir.glob("*.json")):
                (self.dir / LOCK).unlink(missing_ok=True)
                self.dir.rmdir()
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
