"""Slow-loris (issue 11, point 7): half-open sockets against a server short of descriptors.

The audit held TCP connections open from six loopback addresses, never sending the WebSocket
upgrade, against a server limited to 256 file descriptors: /healthz timed out, honest clients
timed out, and asyncio logged a traceback for each failed accept (7.5 MB in 20 s). Here the
real ``python -m signaling`` runs with RLIMIT_NOFILE = 256, and 12 addresses hold 30 sockets
each (360 in all), re-opening every socket the server drops, while the test checks /healthz,
an honest login from another address, and the size of the server's log.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from tests.adversarial.accounts import loopback_alias_works
from tests.signaling.helpers import make_user
from voice.net.client import SignalingClient

ROOT = Path(__file__).resolve().parents[2]
OPEN_FILES = 256
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 14)]  # 12 attackers; the honest client is .1
PER_ADDRESS = 30
MAX_OPENS = 6_000  # bounds the attack's work, whatever the server does
WAIT = 10.0  # every wait is bounded; none is a timing assertion
MAX_LOG_BYTES = 64_000

pytestmark = pytest.mark.skipif(
    not loopback_alias_works(ADDRESSES[-1]), reason="cannot bind 127.0.0.x aliases here"
)

_RUN_LIMITED = (
    "import resource, runpy, sys\n"
    "n = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
    "sys.argv = ['signaling', *sys.argv[2:]]\n"
    "runpy.run_module('signaling', run_name='__main__', alter_sys=True)\n"
)


@contextmanager
def limited_server(tmp: Path, open_files: int) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The real CLI with ``open_files`` descriptors; its stderr goes to a file (never blocks)."""
    log = tmp / "server.log"
    env = {**os.environ, "VOICE_SIGNALING_HTTP_PORT": "0", "VOICE_SIGNALING_LOG_LEVEL": "INFO"}
    argv = ["--port", "0", "--db", str(tmp / "registry.sqlite3")]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_LIMITED, str(open_files), *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)


async def listening(log: Path) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            for line in text.splitlines():
                if '"listening"' in line:
                    return dict(json.loads(line))
            await asyncio.sleep(0.05)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One GET; raises TimeoutError if the server does not answer within 5 s."""
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class Loris:
    """Holds ``PER_ADDRESS`` idle TCP connections from each address, re-opening the dropped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened = 0
        self.dropped = 0
        self.held: dict[str, set[socket.socket]] = {a: set() for a in ADDRESSES}
        self.peak = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Loris]:
        tasks = [asyncio.create_task(self._hold(address)) for address in ADDRESSES]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for socks in self.held.values():
                for sock in socks:
                    sock.close()

    async def _hold(self, address: str) -> None:
        loop = asyncio.get_running_loop()
        mine = self.held[address]
        while True:
            while len(mine) < PER_ADDRESS and self.opened < MAX_OPENS:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((address, 0))
                try:
                    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", self.port)), 1)
                except (OSError, TimeoutError):
                    sock.close()  # the accept queue is full: try again next round
                    break
                self.opened += 1
                mine.add(sock)
            for sock in list(mine):
                try:
                    if sock.recv(1) != b"":
                        continue
                except BlockingIOError:
                    continue  # still open, as the attacker wants
                except OSError:
                    pass
                mine.discard(sock)
                sock.close()
                self.dropped += 1
            self.peak = max(self.peak, sum(len(s) for s in self.held.values()))
            await asyncio.sleep(0.5)


async def honest_login(port: int) -> None:
    """An honest client on 127.0.0.1 logs in and routes an envelope to itself."""
    user = make_user("honest")
    url = f"ws://127.0.0.1:{port}"
    client = await SignalingClient.connect(url, user.name, user.pub, user.sign, open_timeout=5)
    try:
        await client.send(user.name, b"still here")
        assert (await asyncio.wait_for(client.receive(), 5)).body == b"still here"
    finally:
        await client.close()


def metric(text: str, name: str) -> float:
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
    return sum(float(v) for v in values)


async def outcome(step: Awaitable[object], took: list[float]) -> str:
    """What a check under attack gave: ``ok``, an HTTP status, or the exception's name; how
    long it took is appended to ``took`` (printed, never asserted)."""
    started = time.monotonic()
    try:
        result = await step
    except Exception as exc:
        return type(exc).__name__
    finally:
        took.append(round(time.monotonic() - started, 3))
    return str(result[0]) if isinstance(result, tuple) else "ok"


async def test_half_open_sockets_from_many_addresses_leave_health_and_logins_up(
    tmp_path: Path,
) -> None:
    with limited_server(tmp_path, OPEN_FILES) as (proc, log):
        ports = await listening(log)
        async with Loris(ports["port"]).running() as loris:
            ramp = time.monotonic() + 5  # full strength (a starved server may refuse sooner)
            while loris.opened < len(ADDRESSES) * PER_ADDRESS and time.monotonic() < ramp:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # and three rounds of re-opening what the server dropped
            took: list[float] = []
            checks = [await outcome(http_get(ports["http_port"], "/healthz"), took)]
            checks += [await outcome(http_get(ports["http_port"], "/healthz"), took)]
            checks += [await outcome(honest_login(ports["port"]), took)]
            checks += [await outcome(http_get(ports["http_port"], "/healthz"), took)]
            text = (await http_get(ports["http_port"], "/metrics"))[1].decode()
            print(
                f"\n{loris.opened} sockets opened from {len(ADDRESSES)} addresses "
                f"(at most {loris.peak} held at once), {loris.dropped} dropped by the server; "
                f"health, health, login, health: {checks} in {took} s; "
                f"{metric(text, 'signaling_handshakes_in_progress'):.0f} handshakes in "
                f"progress, {metric(text, 'signaling_sockets_dropped_total'):.0f} dropped at accept"
            )
        after = await outcome(http_get(ports["http_port"], "/healthz"), [])  # attack over
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, WAIT)
    size = log.stat().st_size
    logged = log.read_text(errors="replace")
    print(f"server log: {size} bytes, {logged.count(chr(10))} lines, exit {code}")
    assert loris.opened >= len(ADDRESSES) * PER_ADDRESS > OPEN_FILES  # the attack was real
    assert checks == ["200", "200", "ok", "200"] and after == "200"
    assert metric(text, "signaling_handshakes_in_progress") <= 40  # what 256 descriptors allow
    assert size < MAX_LOG_BYTES and "Traceback" not in logged and code == 0
    assert "limits_lowered_to_fit_open_files" in logged


async def test_a_failed_accept_is_logged_once_per_interval_and_the_server_recovers() -> None:
    """accept() failing with EMFILE: asyncio reported each failure with a traceback, about a
    hundred per attempt and an attempt a second; now one line per interval, no traceback."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - plain pipes, driven from threads below
        [sys.executable, "-m", "tests.adversarial.fd_server"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    err: IO[bytes] = proc.stderr
    drained: list[bytes] = []
    reader = asyncio.create_task(asyncio.to_thread(lambda: drained.append(err.read())))

    async def command(word: str) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(word.encode() + b"\n")
        proc.stdin.flush()
        return (await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), WAIT)).decode()

    waiting: list[socket.socket] = []
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        ports = json.loads(line)
        assert (await command("squeeze")).strip() == "squeeze"
        loop = asyncio.get_running_loop()
        for _ in range(50):  # queued by the kernel; every accept() of them fails
            sock = socket.socket()
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", ports["port"])), WAIT)
            waiting.append(sock)
        started = time.monotonic()
        await asyncio.sleep(3.0)  # about three attempts to accept (asyncio retries each second)
        assert (await command("release")).strip() == "release"
        await honest_login(ports["port"])  # the listener recovered by itself
        elapsed = time.monotonic() - started
    finally:
        for sock in waiting:
            sock.close()
        if proc.poll() is None:
            proc.stdin.close()
        await asyncio.to_thread(proc.wait, WAIT)
        await asyncio.wait_for(reader, WAIT)
    text = b"".join(drained).decode(errors="replace")
    failures = [json.loads(x) for x in text.splitlines() if '"accept_failed"' in x]
    print(f"\nEMFILE for {elapsed:.1f} s: log {len(text)} bytes, {len(failures)} accept_failed")
    assert "Traceback" not in text and len(text) < MAX_LOG_BYTES
    assert 1 <= len(failures) <= 2
    assert "Too many open files" in failures[0]["error"]
