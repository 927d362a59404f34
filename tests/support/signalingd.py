"""``python -m signaling`` as a real process on loopback, for the tests of its command line
and of deployments (several instances behind HAProxy).

    server = start_signaling(tmp_path, "one", ["--db", url, "--server-id", SID], env={...})
    server.url, server.health()  # ws://127.0.0.1:PORT, /healthz as a dict (None: no answer)
    server.stop()
"""

from __future__ import annotations

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
    """Start an instance on free loopback ports and wait for its /healthz (AssertionError with
    its output if it exits or does not answer within ``timeout``)."""
    port, http_port = free_port(), free_port()
    log = folder / f"{name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signaling", "--port", str(port), "--http-port",
             str(http_port), *args],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    server = SignalingProcess(proc, port, http_port, log, tls)
    deadline = time.monotonic() + timeout
    while server.health() is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(
                f"{name} did not start (exit {proc.returncode}):\n{server.output()}"
            )
        time.sleep(0.05)
    return server
