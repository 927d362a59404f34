"""A real coturn TURN server on loopback for tests, in coturn's REST-API mode (use-auth-secret).

It accepts the short-lived credentials that the signaling server issues
(``signaling.turn.turn_credentials``) and relays between loopback peers only.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Coturn:
    host: str
    port: int
    secret: bytes
    log: Path


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    out = subprocess.run(["ss", "-lun"], capture_output=True, text=True, check=False).stdout
    return f"127.0.0.1:{port} " in out


@contextlib.contextmanager
def running_coturn(workdir: Path, *, start_timeout: float = 10.0) -> Iterator[Coturn]:
    """Start ``turnserver`` on a free loopback port; stop it on exit."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn is not installed: run scripts/setup.sh")
    port = _free_udp_port()
    secret = secrets.token_hex(16)
    log = workdir / "turnserver.log"
    relay_low = 40_000 + (port % 1_000) * 20
    conf = workdir / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                f"min-port={relay_low}",
                f"max-port={relay_low + 19}",
                "use-auth-secret",
                f"static-auth-secret={secret}",
                "realm=voice.test",
                "allow-loopback-peers",
                "no-cli",
                "no-tls",
                "no-dtls",
                "no-tcp",
                "fingerprint",
                "no-stdout-log",
                f"log-file={log}",
                "simple-log",
                "verbose",
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + start_timeout
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start; see {log}")
            time.sleep(0.05)
        yield Coturn("127.0.0.1", port, secret.encode(), log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
