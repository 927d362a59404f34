"""Schema versions of the registry, in SQLite and PostgreSQL: a fresh database is migrated to
the latest version, a version-1 database keeps its data, a newer database is refused and left
as it was, and instances starting together migrate once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from signaling.errors import ConfigError
from signaling.registry import Registry, SQLiteRegistry
from signaling.registry_schema import LATEST
from tests.signaling.registry_backends import Backend, backend

__all__ = ["backend"]

# Version 1 as the SQLite files made before there were versions hold it, written out here
# rather than taken from the code, so that a change to migration 1 cannot hide a break.
SQLITE_V1 = (
    "CREATE TABLE users (name TEXT PRIMARY KEY, key BLOB NOT NULL,"
    " created INTEGER NOT NULL DEFAULT (strftime('%s','now')))",
    "CREATE TABLE invites (digest BLOB PRIMARY KEY, user TEXT, expires REAL NOT NULL)",
)
POSTGRES_V1 = (
    "CREATE TABLE users (name TEXT PRIMARY KEY, key BYTEA NOT NULL,"
    " created BIGINT NOT NULL DEFAULT extract(epoch FROM now())::bigint)",
    'CREATE TABLE invites (digest BYTEA PRIMARY KEY, "user" TEXT, expires DOUBLE PRECISION'
    " NOT NULL)",
    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION"
    " NOT NULL)",
    "INSERT INTO schema_migrations VALUES (1, 0)",
)


def _versions(backend: Backend) -> list[int]:
    return [row[0] for row in backend.sql("SELECT version FROM schema_migrations ORDER BY 1")]


def _tables(backend: Backend) -> set[str]:
    if backend.kind == "sqlite":
        rows = backend.sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = backend.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows}


def test_a_fresh_database_is_migrated_to_the_latest_version(backend: Backend) -> None:
    backend.open().close()
    assert _versions(backend) == list(range(1, LATEST + 1))
    assert {"users", "invites", "schema_migrations"} <= _tables(backend)
    backend.open().close()  # opening again applies nothing twice
    assert _versions(backend) == list(range(1, LATEST + 1))


def test_a_version_1_database_is_migrated_without_losing_data(backend: Backend) -> None:
    from signaling.registry import invite_digest

    for statement in SQLITE_V1 if backend.kind == "sqlite" else POSTGRES_V1:
        backend.sql(statement)
    backend.sql("INSERT INTO users (name, key) VALUES (?, ?)", ("alice", b"A" * 32))
    backend.sql(
        'INSERT INTO invites (digest, "user", expires) VALUES (?, ?, ?)',
        (invite_digest("t" * 22), "bob", time.time() + 60),
    )
    registry = backend.open()
    assert _versions(backend) == list(range(1, LATEST + 1))
    assert registry.key_of("alice") == b"A" * 32 and not registry.claim("alice", b"B" * 32)
    assert registry.reserved("bob", time.time())
    assert registry.redeem("t" * 22, "bob", b"B" * 32, time.time(), bound_only=True)
    registry.close()


def test_a_database_from_a_newer_version_is_refused_and_left_alone(backend: Backend) -> None:
    backend.sql(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied REAL NOT NULL)"
    )
    backend.sql("INSERT INTO schema_migrations VALUES (?, 0)", (LATEST + 1,))
    with pytest.raises(ConfigError) as refused:
        backend.open()
    message = str(refused.value)
    assert f"schema version {LATEST + 1}" in message and f"up to {LATEST}" in message
    assert "never downgraded" in message
    assert "test-only-password" not in message
    assert _tables(backend) == {"schema_migrations"}  # nothing was created
    assert _versions(backend) == [LATEST + 1]


def test_instances_starting_together_migrate_once(backend: Backend) -> None:
    count = 6
    start = threading.Barrier(count)
    opened: list[Registry] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(backend.open())
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for registry in opened:
        registry.close()
    assert not failed, failed
    assert len(opened) == count
    assert _versions(backend) == list(range(1, LATEST + 1))


def test_instances_opening_a_new_sqlite_file_together_all_open(tmp_path: Path) -> None:
    """Switching a new file to WAL needs it alone, and SQLite refuses that at once instead of
    waiting ("database is locked", about one start in fifteen here): every instance waits."""
    failed: list[BaseException] = []
    for attempt in range(40):
        path = tmp_path / f"registry-{attempt}.sqlite3"
        start = threading.Barrier(6)

        def open_one(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                SQLiteRegistry(path).close()
            except BaseException as exc:
                failed.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not failed, failed[:3]
