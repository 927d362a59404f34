"""A real PostgreSQL server for the tests: a throwaway cluster in a temporary folder.

    with PostgresCluster.start() as pg:
        url = pg.new_database()   # postgresql://voice:...@127.0.0.1:PORT/db1, empty

Debian's ``postgresql`` package (scripts/setup.sh) provides the programs. PostgreSQL refuses to
run as root, so as root (CI) the cluster belongs to the ``postgres`` system user. It listens on
loopback and on a socket in its own folder, with a password (scram-sha-256) as in
docker-compose.yml, and without fsync: nothing in it outlives the test run. Start and stop take
well under a second each.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresCluster:
    folder: Path
    port: int
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
        cluster = cls(folder, _free_port())
        data = folder / "data"
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={cluster.port}"
            f" -c unix_socket_directories={folder} -c fsync=off -c full_page_writes=off"
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

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database (one per test keeps the tests apart)."""
        self._databases += 1
        name = f"db{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
