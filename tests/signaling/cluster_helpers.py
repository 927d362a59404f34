"""A real deployment on loopback for the cluster tests: one redis-server on a unix socket in a
temporary directory, and signaling instances as real ``python -m signaling`` processes sharing
it, one SQLite registry file and one server id (what a deployment shares).

Nothing here is shared between two test processes (the suite runs on two xdist workers):
Redis has no TCP port, files live in the test's own directory, and each instance listens on
ports the kernel picks (port 0) and tells us in its ``listening`` log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.signaling.helpers import PERMISSIVE, make_user
from tests.support.processes import stop_process
from voice.net.client import SignalingClient

SERVER_ID = "cluster-test-deployment-0001"
START_TIMEOUT = 15.0
_numbers = itertools.count(1)


class RedisServer:
    """``redis-server`` without TCP or persistence: a restart forgets everything."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, more: list[str] | None = None) -> None:
        """``more``: further redis-server options (``--requirepass``, say)."""
        args = ["redis-server", "--port", "0", "--unixsocket", str(self.socket)]
        args += ["--unixsocketperm", "700", "--save", "", "--appendonly", "no", *(more or [])]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        _wait_for(lambda: _connects(socket.AF_UNIX, str(self.socket)), "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.socket.unlink(missing_ok=True)

    def command(self, *args: str) -> bytes:
        """One command through ``redis-cli`` (the tests' own view of the bus)."""
        out = subprocess.run(
            ["redis-cli", "-s", str(self.socket), "--raw", *args],
            check=True,
            capture_output=True,
            timeout=10,
        )
        return out.stdout


class Instance:
    """One signaling instance process of the deployment."""

    def __init__(self, directory: Path, redis_url: str, **settings: Any) -> None:
        self.port = self.http_port = 0  # known once it listens (wait_ready)
        self.redis_url = redis_url
        self.log = directory / f"instance-{os.getpid()}-{next(_numbers)}.log"
        env = {
            **os.environ,
            "VOICE_SIGNALING_PORT": "0",
            "VOICE_SIGNALING_HTTP_PORT": "0",
            "VOICE_SIGNALING_DB": str(directory / "registry.sqlite3"),
            "VOICE_SIGNALING_SERVER_ID": SERVER_ID,
            "VOICE_SIGNALING_REDIS": redis_url,
            "VOICE_SIGNALING_LOG_LEVEL": "INFO",  # for the ports in "listening"
            "VOICE_SIGNALING_MAX_CONNECTIONS_PER_IP": "1000",
        }
        for name, value in {**PERMISSIVE, **settings}.items():
            env["VOICE_SIGNALING_" + name.upper()] = str(value)
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen([sys.executable, "-m", "signaling"], env=env, stderr=sink)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        _wait_for(lambda: self._listening() and self.health().get("bus") is True, "instance")

    def output(self) -> str:
        """The end of its log (JSON lines)."""
        return self.log.read_text(errors="replace")[-4000:]

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the instance exited ({self.proc.returncode}): {self.output()}")
        if not self.port:
            for line in self.log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.get("event") == "listening":
                        self.port, self.http_port = int(event["port"]), int(event["http_port"])
        return bool(self.port)

    def health(self) -> dict[str, Any]:
        """/healthz, or {} while it does not answer."""
        try:
            return dict(json.loads(self._get(b"/healthz")))
        except (OSError, ValueError):
            return {}

    def metric(self, name: str) -> float:
        """One sample from /metrics (0 if absent)."""
        text = self._get(b"/metrics").decode()
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    def _get(self, path: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=2) as s:
            s.sendall(b"GET " + path + b" HTTP/1.1\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[-1]

    def kill(self) -> None:
        """SIGKILL: no goodbye to Redis, its sockets reset by the kernel."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc)


def start_instances(directory: Path, redis_url: str, n: int, **settings: Any) -> list[Instance]:
    instances = [Instance(directory, redis_url, **settings) for _ in range(n)]
    for instance in instances:
        instance.wait_ready()
    return instances


async def eventually(check: Callable[[], Any], limit: float = 10.0) -> None:
    """Retry the awaitable-returning ``check`` until it returns without raising."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        try:
            await check()
            return
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


def _wait_for(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {START_TIMEOUT} s")
        time.sleep(0.05)


def _connects(family: int, address: str) -> bool:
    try:
        with socket.socket(family) as s:
            s.connect(address)
        return True
    except OSError:
        return False


async def login(made: list[SignalingClient], name: str, instance: Instance) -> SignalingClient:
    """``name`` logged in at ``instance`` (one key per name), kept in ``made``."""
    client = await make_user(name, seed=sum(name.encode()) % 256).connect(instance.url)
    made.append(client)
    return client
