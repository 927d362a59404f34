"""A real PostgreSQL server for the tests: a throwaway cluster in a temporary folder.

    with PostgresCluster.start() as pg:
        url = pg.new_database()   # postgresql://voice:...@/db1?host=/tmp/voice-pg-..., empty
        relay = pg.relay()        # a loopback TCP port in front of it, that can go dark

Debian's ``postgresql`` package (scripts/setup.sh) provides the programs. PostgreSQL refuses to
run as root, so as root (CI) the cluster belongs to the ``postgres`` system user. It listens
only on a unix socket in its own folder (no TCP port: two test processes starting clusters at
once cannot race for one), with a password (scram-sha-256) as in docker-compose.yml, and
without fsync: nothing in it outlives the test run. Start and stop take well under a second
each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

USER = "voice"
PASSWORD = "test-only-password"


def _bin(name: str) -> str | None:
    """A PostgreSQL program: on PATH, else in Debian's versioned folder (the newest)."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


needs_postgres = pytest.mark.skipif(
    _bin("initdb") is None or _bin("pg_ctl") is None,
    reason="PostgreSQL is missing: scripts/setup.sh installs Debian's postgresql",
)


@dataclass
class PostgresCluster:
    folder: Path  # holds the socket, .s.PGSQL.5432
    _databases: int = 0

    @classmethod
    @contextmanager
    def start(cls) -> Iterator[PostgresCluster]:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        assert initdb is not None and pg_ctl is not None, "PostgreSQL is not installed"
        folder = Path(tempfile.mkdtemp(prefix="voice-pg-"))
        as_owner: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            shutil.chown(folder, "postgres")
            as_owner = ["runuser", "-u", "postgres", "--"]
        (folder / "pw").write_text(PASSWORD)
        if as_owner:
            shutil.chown(folder / "pw", "postgres")
        cluster = cls(folder)
        data = folder / "data"
        options = (
            f"-c listen_addresses='' -c unix_socket_directories={folder}"
            " -c fsync=off -c full_page_writes=off"
        )
        try:
            for command in (
                [*as_owner, initdb, "-D", str(data), "-U", USER, f"--pwfile={folder / 'pw'}",
                 "--auth=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"],
                [*as_owner, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w",
                 "-o", options, "start"],
            ):  # fmt: skip
                subprocess.run(command, check=True, capture_output=True, timeout=60)
        except subprocess.CalledProcessError as exc:
            log = folder / "log"
            detail = log.read_text() if log.exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r} {detail}") from None
        try:
            yield cluster
        finally:
            subprocess.run(
                [*as_owner, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            shutil.rmtree(folder, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: bool = True, port: int = 0) -> str:
        """The URL of ``database``: through the cluster's socket, or a loopback ``port``."""
        secret = f":{PASSWORD}" if password else ""
        if port:
            return f"postgresql://{USER}{secret}@127.0.0.1:{port}/{database}"
        return f"postgresql://{USER}{secret}@/{database}?host={self.folder}"

    @property
    def socket_path(self) -> Path:
        return self.folder / ".s.PGSQL.5432"

    def relay(self) -> Relay:
        """A loopback TCP port (port 0: the kernel's pick, no race) relaying to the cluster."""
        return Relay(self.socket_path)

    def new_database(self) -> str:
        """The URL of a new, empty database (one per test keeps the tests apart)."""
        self._databases += 1
        name = f"db{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


class Relay:
    """A loopback TCP port in front of the cluster's socket that can go dark: ``blackhole``
    cuts every connection through it and leaves new ones unanswered (a database host that
    vanished); ``restore`` relays again. Threads, so that blocking clients can use it."""

    def __init__(self, target: Path) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._dark = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="pg-relay", daemon=True).start()

    def blackhole(self) -> None:
        with self._lock:
            self._dark = True
        self._cut()

    def restore(self) -> None:
        with self._lock:
            self._dark = False
        self._cut()  # the unanswered ones fail now

    def close(self) -> None:
        self._listener.close()
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            cut, self._sockets = self._sockets, set()
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                self._sockets.add(client)
                if self._dark:
                    continue  # held, never answered
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(str(self._target))
            except OSError:
                upstream.close()
                client.close()
                continue
            with self._lock:
                self._sockets.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
