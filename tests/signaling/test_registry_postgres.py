"""The PostgreSQL registry on a real server: it answers lookups from its copy when the database
connections die, fails the one write that finds them dead and then recovers, never stalls the
event loop for long when the database host vanishes (a circuit breaker), says clearly when the
database cannot be reached (never showing the password), and ``python -m signaling --db
postgresql://...`` serves real logins."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from signaling import admin
from signaling.config import Config
from signaling.errors import ConfigError
from signaling.registry import Allowance, RegistryUnavailable, invite_digest
from signaling.registry_breaker import CONNECT_WAIT, MAX_WRITE_RETRY
from signaling.registry_open import open_registry
from signaling.registry_postgres import CLEANUP_EVERY, RETRY, PostgresRegistry
from signaling.serveridentity import load_server_identity
from tests.signaling.helpers import make_user
from tests.support.postgres import PASSWORD, PostgresCluster, needs_postgres
from tests.support.signalingd import free_port, start_signaling
from voice.errors import LoginRefused

pytestmark = needs_postgres
SERVER_ID = "0123456789abcdef0123456789abcdef"


def _kill_connections(url: str) -> int:
    """End every server connection of the registries (as a database restart would)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'voice-signaling'"
        ).fetchall()
    return len(rows)


def test_lookups_survive_lost_connections_and_the_copy_is_reloaded(
    postgres: PostgresCluster,
) -> None:
    url = postgres.new_database()
    registry = open_registry(url)
    assert isinstance(registry, PostgresRegistry)
    assert registry.claim("alice", b"A" * 32)
    assert _kill_connections(url) == 2  # the writer and the listener
    assert registry.key_of("alice") == b"A" * 32  # from the copy: no database needed
    with psycopg.connect(url, autocommit=True) as conn:  # a change it cannot be told about now
        conn.execute("INSERT INTO users (name, key) VALUES ('bob', %s)", (b"B" * 32,))
    with pytest.raises(RegistryUnavailable):  # the one write that finds its connection dead
        registry.claim("carol", b"C" * 32)
    assert registry.claim("carol", b"C" * 32)  # the next one connects again
    deadline = time.monotonic() + 5
    while registry.key_of("bob") is None:  # the listener came back and reloaded the copy
        assert time.monotonic() < deadline, "the copy was never reloaded"
        time.sleep(0.02)
    assert registry.count() == 3
    registry.close()


class Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_vanished_database_host_stalls_writes_once_per_backoff_period(
    postgres: PostgresCluster,
) -> None:
    database = conninfo_to_dict(postgres.new_database())["dbname"]
    relay, clock = postgres.relay(), Clock()
    registry = PostgresRegistry(postgres.url(database, port=relay.port), clock=clock)

    def refused(name: str) -> float:
        """How long a claim that the registry refuses held the event loop."""
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            registry.claim(name, b"K" * 32)
        return time.monotonic() - started

    try:
        assert registry.claim("alice", b"A" * 32)
        relay.blackhole()  # the connections are cut; new ones are never answered
        assert refused("bob") < 0.5  # the write that finds its connection dead
        bounded = CONNECT_WAIT + 0.2  # libpq alone would wait 2 s
        assert refused("bob") < bounded  # one attempt to connect, cut short: breaker open
        assert max(refused(f"u{i}") for i in range(20)) < 0.1  # at once meanwhile
        clock.now += RETRY  # the first backoff is over: one more short attempt
        assert refused("bob") < bounded
        clock.now += RETRY  # the backoff doubled: still refused at once
        assert refused("bob") < 0.1
        assert registry.key_of("alice") == b"A" * 32  # reads never needed the database
        relay.restore()
        deadline = time.monotonic() + 5
        while True:  # the database is back: the next write after the backoff connects
            clock.now += MAX_WRITE_RETRY
            try:
                assert registry.claim("bob", b"B" * 32)
                break
            except RegistryUnavailable:
                assert time.monotonic() < deadline, "the registry never connected again"
                time.sleep(0.05)
    finally:
        registry.close()
        relay.close()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections and that no other process can take."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield int(held.getsockname()[1])


def test_an_unreachable_database_is_a_clear_error_without_the_password(
    capsys: pytest.CaptureFixture[str], dead_port: int
) -> None:
    url = f"postgresql://voice:{PASSWORD}@127.0.0.1:{dead_port}/registry"
    with pytest.raises(RegistryUnavailable) as failed:
        open_registry(url)
    assert "cannot open the registry postgresql registry on 127.0.0.1" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    assert admin.main(["show", "alice", "--db", url]) == 1
    err = capsys.readouterr().err
    assert "cannot open the registry" in err and PASSWORD not in err


async def test_a_server_with_a_postgresql_db_serves_logins(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.new_database()
    bare = url.replace(f":{PASSWORD}@", "@")  # the password comes as PGPASSWORD, as in compose
    server = start_signaling(
        tmp_path, "pg", ["--db", bare, "--server-id", SERVER_ID], env={"PGPASSWORD": PASSWORD}
    )
    try:
        alice = make_user("alice")
        client = await alice.connect(server.url)
        await client.close()
        with pytest.raises(LoginRefused) as refused:  # the name is the first key's
            await make_user("alice").connect(server.url)
        assert refused.value.code == "username_taken"
    finally:
        server.stop()
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT name, key FROM users").fetchall()
    assert rows == [("alice", alice.pub)]


def test_a_postgresql_db_needs_an_explicit_server_id() -> None:
    url = f"postgresql://voice@127.0.0.1:{free_port()}/registry"
    with pytest.raises(ConfigError, match="server_id: set it when db is a postgresql:// URL"):
        load_server_identity(Config(db=url))  # nowhere to keep <db>.server-id
    identity, _tls = load_server_identity(Config(db=url, server_id=SERVER_ID))
    assert identity.server_id == SERVER_ID


def test_a_late_notice_of_an_invitation_used_here_does_not_bring_it_back(
    postgres: PostgresCluster,
) -> None:
    """The "added" notice of an invitation can arrive after this instance used it (seen in CI:
    the name stayed reserved after its own redeem). Applied late, it must not undo the use."""
    registry = open_registry(postgres.new_database())
    assert isinstance(registry, PostgresRegistry)
    now = time.time()
    registry.add_invite("late-token", "bob", now + 60)
    assert registry.redeem("late-token", "bob", b"B" * 32, now, bound_only=True)
    time.sleep(0.5)  # every real notice has come: now the late one, alone
    registry._sync()
    row = {"digest": "\\x" + invite_digest("late-token").hex(), "user": "bob", "expires": now + 60}
    registry._apply(json.dumps({"table": "invites", "op": "upsert", "row": row}))
    assert not registry.reserved("bob", now) and registry.key_of("bob") == b"B" * 32
    registry.close()


def test_a_registration_never_waits_on_another_instances_bucket(postgres: PostgresCluster) -> None:
    """Another instance's transaction holds the row of a bucket that is full again (its
    registration under way): takes of other buckets, and the cleanup of full ones, go on at
    once instead of waiting for it (they would deadlock with a take that waits for ours)."""
    url = postgres.new_database()
    registry = PostgresRegistry(url)
    now = time.time()
    server = Allowance("server", per_second=1000.0, burst=1000)
    stale = Allowance("address 10.9.9.9", per_second=1000.0, burst=1)
    assert registry.take((stale, server), now - 60) is None  # full again long since
    with psycopg.connect(url) as other:  # a transaction: the row stays locked until rollback
        other.execute("UPDATE allowances SET arrival = arrival WHERE bucket = %s", (stale.bucket,))
        started = time.monotonic()
        for n in range(CLEANUP_EVERY + 1):  # a cleanup among them
            address = Allowance(f"address 10.0.0.{n}", per_second=1000.0, burst=1)
            assert registry.take((address, server), now) is None
        assert time.monotonic() - started < 1.0  # the lock timeout is 2 s
        other.rollback()
    (kept,) = registry_rows(url, stale.bucket)
    assert kept == 1  # left for a later cleanup, not waited for
    registry.close()


def registry_rows(url: str, bucket: str) -> tuple[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM allowances WHERE bucket = %s", (bucket,))
        return (int(row.fetchone()[0]),)  # type: ignore[index]
