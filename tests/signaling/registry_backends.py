"""The registry's two databases side by side, for tests that must hold on both: an SQLite file
and a database on a real PostgreSQL server (tests/support/postgres.py).

SQLite shows another process's write at the very next query; PostgreSQL within a
notification's delay. ``settled`` asserts each backend's promise: at once for SQLite, within
two seconds for PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from signaling.registry import Registry
from signaling.registry_open import open_registry
from tests.support.postgres import needs_postgres

SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Backend:
    kind: str  # "sqlite" or "postgres"
    db: str  # the db setting: a file or a postgresql:// URL

    def open(self) -> Registry:
        return open_registry(self.db)

    def settled(self, check: Callable[[], bool]) -> bool:
        """Whether ``check`` holds as soon as this backend promises it."""
        if self.kind == "sqlite":
            return check()
        deadline = time.monotonic() + SETTLE_SECONDS
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the database directly (``?`` placeholders), committed."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.db, isolation_level=None) as db:
                return db.execute(statement, params).fetchall()
        with psycopg.connect(self.db, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "registry.sqlite3"))
    else:
        yield Backend("postgres", request.getfixturevalue("postgres").new_database())
