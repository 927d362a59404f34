"""Fixtures of the signaling tests: one real PostgreSQL cluster for the whole run, started only
by the tests that ask for it (tests/support/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresCluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster.start() as cluster:
        yield cluster
