"""A Docker engine and docker-compose.yml's stack, run for real (test_compose_stack.py).

The engine: the one answering on the default socket, or a ``dockerd`` this module starts (as
root) and stops again. The images: the project's, built by compose from the Dockerfile, over
stand-ins for the upstream base images (deploy/ci-images/build.sh) where Docker Hub is out of
reach. The compose file: docker-compose.yml itself, copied with three changes only — no
top-level ``name:`` (docker-compose 1.29 rejects it; the project name is passed with ``-p``),
the env file the test writes instead of ``.env``, and the proxy published on an ephemeral
loopback port instead of 8000.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CI_IMAGES = ROOT / "deploy" / "ci-images" / "build.sh"
STAND_IN_LABEL = "org.leviathan.ci-stand-in"


class EngineUnavailable(RuntimeError):
    """No Docker engine answers and none could be started here."""


def _run(cmd: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


@dataclass
class Engine:
    docker: str
    started: subprocess.Popen[bytes] | None
    log: Path

    @classmethod
    def ensure(cls, workdir: Path) -> Engine:
        """The running engine, or one started here; EngineUnavailable says why not."""
        docker = shutil.which("docker")
        if docker is None:
            raise EngineUnavailable("no docker client (apt-get install docker.io)")
        log = workdir / "dockerd.log"
        if _run([docker, "info"], 30).returncode == 0:
            return cls(docker, None, log)
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise EngineUnavailable("no dockerd (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd needs root here (no engine is running)")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [dockerd, "--host", "unix:///var/run/docker.sock"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        engine = cls(docker, proc, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _run([docker, "info"], 10).returncode == 0:
                return engine
            time.sleep(0.5)
        engine.stop()
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise EngineUnavailable("dockerd did not come up:\n" + "\n".join(tail))

    def stop(self) -> None:
        """Stop the engine if this module started it (SIGTERM, then SIGKILL after 30 s)."""
        if self.started is None or self.started.poll() is not None:
            return
        self.started.send_signal(signal.SIGTERM)
        try:
            self.started.wait(30)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait(10)

    def build_stand_ins(self) -> None:
        """The upstream base images as Debian stand-ins, unless the real ones are here."""
        result = _run(["bash", str(CI_IMAGES), self.docker], 900)
        if result.returncode != 0:
            raise RuntimeError(f"{CI_IMAGES.name} failed:\n{result.stderr[-3000:]}")


def ci_compose_file(workdir: Path, env_file: Path) -> Path:
    """docker-compose.yml with only the three changes the module docstring lists."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose.pop("name", None)
    for service in compose["services"].values():
        if "env_file" in service:
            service["env_file"] = [str(env_file)]
    compose["services"]["proxy"]["ports"] = ["127.0.0.1::8000"]
    out = workdir / "docker-compose.ci.yml"
    out.write_text(yaml.safe_dump(compose, sort_keys=False))
    return out


@dataclass
class Stack:
    engine: Engine
    project: str
    compose_file: Path

    def compose(self, *args: str, timeout: float = 300) -> str:
        cmd = [
            "docker-compose",
            "--no-ansi",
            "-p",
            self.project,
            "-f",
            str(self.compose_file),
            "--project-directory",
            str(ROOT),
            *args,
        ]
        result = _run(cmd, timeout)
        if result.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def inspect(self, container: str) -> dict[str, Any]:
        out = _run([self.engine.docker, "inspect", container], 30)
        data: list[dict[str, Any]] = json.loads(out.stdout)
        return data[0]

    def health(self, service: str) -> list[str]:
        states = []
        for cid in self.containers(service):
            state = self.inspect(cid)["State"]
            states.append(state.get("Health", {}).get("Status", state["Status"]))
        return states

    def wait_healthy(self, service: str, replicas: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.health(service)
            if len(states) == replicas and all(s == "healthy" for s in states):
                return
            time.sleep(1)
        raise AssertionError(f"{service}: {self.health(service)} after {timeout:g}s")

    def proxy_url(self) -> str:
        host_port = self.compose("port", "proxy", "8000").strip()
        return f"http://{host_port}"

    def exec(self, container: str, *cmd: str, timeout: float = 60) -> str:
        result = _run([self.engine.docker, "exec", container, *cmd], timeout)
        if result.returncode != 0:
            raise RuntimeError(f"exec {cmd} in {container[:12]} failed: {result.stderr[-2000:]}")
        return result.stdout

    def psql(self, sql: str) -> list[str]:
        (postgres,) = self.containers("postgres")
        out = self.exec(postgres, "psql", "-U", "leviathan", "-d", "leviathan", "-tAc", sql)
        return [line for line in out.splitlines() if line]

    def scrape(self, container: str, port: int) -> str:
        """/metrics of one tier replica, read from inside its container."""
        code = (
            "import urllib.request as u;"
            f"print(u.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())"
        )
        return self.exec(container, "python", "-c", code)

    def resources(self) -> dict[str, list[str]]:
        """What the engine still holds of this project (containers, volumes, networks)."""
        label = f"label=com.docker.compose.project={self.project}"
        out = {}
        for what in ("container", "volume", "network"):
            cmd = [self.engine.docker, what, "ls", "-q", "--filter", label]
            if what == "container":
                cmd.insert(3, "-a")
            out[what] = _run(cmd, 30).stdout.split()
        return out


def post_json(url: str, body: object, token: str, timeout: float = 30) -> tuple[int, bytes]:
    """One POST to the proxy; the status and body, an HTTP error status included."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def get_json(url: str, token: str, timeout: float = 30) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())
