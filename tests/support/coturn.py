"""A real coturn TURN server on loopback for tests, in coturn's REST-API mode (use-auth-secret).

It accepts the short-lived credentials that the signaling server issues
(``signaling.turn.turn_credentials``) and relays between loopback peers only. It always
listens on UDP (and answers STUN there); ``tcp=True`` adds TURN over TCP on the same port and
``tls=`` (a certificate from ``tests.support.tls``) TURN over TLS on ``tls_port``.
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

from tests.support.processes import stop_process
from tests.support.tls import IssuedCert


@dataclass(frozen=True)
class Coturn:
    host: str
    port: int
    secret: bytes
    log: Path
    tcp: bool = False  # TURN over TCP on ``port`` too
    tls_port: int | None = None  # TURN over TLS

    def uris(self) -> tuple[str, ...]:
        """Every way to reach this server, as the signaling server hands them out."""
        uris = [f"stun:{self.host}:{self.port}", f"turn:{self.host}:{self.port}?transport=udp"]
        if self.tcp:
            uris.append(f"turn:{self.host}:{self.port}?transport=tcp")
        if self.tls_port is not None:
            uris.append(f"turns:{self.host}:{self.tls_port}?transport=tcp")
        return tuple(uris)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int, flags: str = "-lun") -> bool:
    out = subprocess.run(["ss", flags], capture_output=True, text=True, check=False).stdout
    return f"127.0.0.1:{port} " in out


@contextlib.contextmanager
def running_coturn(
    workdir: Path,
    *,
    start_timeout: float = 10.0,
    tcp: bool = False,
    tls: IssuedCert | None = None,
) -> Iterator[Coturn]:
    """Start ``turnserver`` on a free loopback port; stop it on exit.

    ``tcp``: also TURN over TCP on that port; ``tls``: TURN over TLS on another free port,
    with this certificate (the client must trust its CA)."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn is not installed: run scripts/setup.sh")
    port = _free_udp_port()
    secret = secrets.token_hex(16)
    log = workdir / "turnserver.log"
    relay_low = 40_000 + (port % 1_000) * 20
    tls_port = _free_tcp_port() if tls is not None else None
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
                *(
                    ["no-tls"]
                    if tls is None
                    else [f"tls-listening-port={tls_port}", f"cert={tls.cert}", f"pkey={tls.key}"]
                ),
                "no-dtls",
                *([] if tcp or tls is not None else ["no-tcp"]),
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
        while not (
            _listening(port)
            and (not tcp or _listening(port, "-ltn"))
            and (tls_port is None or _listening(tls_port, "-ltn"))
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start; see {log}")
            time.sleep(0.05)
        yield Coturn("127.0.0.1", port, secret.encode(), log, tcp, tls_port)
    finally:
        stop_process(proc)
