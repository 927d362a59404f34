"""``python -m signaling`` as a real process on loopback, for the tests of its command line
and of deployments (several instances behind HAProxy).

    server = start_signaling(tmp_path, "one", ["--db", url, "--server-id", SID], env={...})
    server.url, server.health()  # ws://127.0.0.1:PORT, /healthz as a dict (None: no answer)
    server.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SignalingProcess:
    proc: subprocess.Popen[bytes]
    port: int
    http_port: int
    log: Path
    tls: bool

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any] | None:
        """The instance's /healthz answer, or None if it gives none within a second."""
        try:
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as answer:
                health: dict[str, Any] = json.loads(answer.read())
                return health
        except OSError:
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_process(self.proc)


def start_signaling(
    folder: Path,
    name: str,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    tls: bool = False,
    timeout: float = 15.0,
) -> SignalingProcess:
    """Start an instance on loopback ports the kernel picks (port 0: no other process can
    take them between our choosing and its binding) and wait for its /healthz (AssertionError
    with its output if it exits or does not answer within ``timeout``)."""
    log = folder / f"{name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signaling", "--port", "0", "--http-port", "0",
             "--log-level", "INFO", *args],  # INFO: the "listening" line names the ports
            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    server = SignalingProcess(proc, 0, 0, log, tls)
    deadline = time.monotonic() + timeout
    while not server.port or server.health() is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(
                f"{name} did not start (exit {proc.returncode}):\n{server.output()}"
            )
        if not server.port:
            server.port, server.http_port = _listening_ports(log)
        time.sleep(0.05)
    return server


def _listening_ports(log: Path) -> tuple[int, int]:
    """The ports of the instance's "listening" log line, or (0, 0) before it is written."""
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "listening":
                return int(event["port"]), int(event["http_port"])
    return 0, 0
