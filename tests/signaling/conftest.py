"""Fixtures of the signaling tests: one real PostgreSQL cluster for the whole run, started only
by the tests that ask for it (tests/support/postgres.py), and a redis-server per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.signaling.cluster_helpers import RedisServer
from tests.support.postgres import PostgresCluster
from voice.net.client import SignalingClient


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster.start() as cluster:
        yield cluster


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a unix socket in its directory (a module may
    override it with one per module)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[SignalingClient]]:
    """The signaling clients a test logged in (tests/signaling/cluster_helpers.login); closed
    at its end."""
    made: list[SignalingClient] = []
    yield made
    await asyncio.gather(*(c.close() for c in made))
