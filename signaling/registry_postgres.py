"""The registry in PostgreSQL: one registry shared by every instance of a deployment.

The Router asks its registry synchronously, on the event loop: a round trip to a database on
another host there would stall every connection of the instance while it waits. So reads never
go to the network:

* Each instance holds a copy of the two tables (names and keys; invitations), loaded on open
  and kept current by NOTIFY: triggers (schema version 2) announce every row inserted, changed
  or deleted on :data:`~signaling.registry_schema.CHANNEL`, and every registry call first
  applies what has arrived, without waiting (a zero-timeout poll of the listening connection).
  ``key_of``, ``exists``, ``count``, ``reserved`` and the refusal of an unknown or expired
  invitation are answered from the copy.
* Only what the database must decide goes to it, with bounded waits (statement and lock
  timeouts; TCP timeouts for a host that vanished): binding a name the copy says is free
  (``INSERT ... ON CONFLICT DO NOTHING``: two instances racing for a name agree), using up an
  invitation the copy says is valid, and the admin command's writes. Those are registrations,
  rare and rate limited; when the database is down they fail with :class:`RegistryUnavailable`
  and the server answers that login with ``internal``. A lost writing connection is opened
  again in a thread behind a circuit breaker (:mod:`signaling.registry_breaker`): the loop
  waits for it at most a fraction of a second, and while the database stays away writes fail
  at once, so a vanished database host stalls the instance at most once per backoff period.

Another process's change reaches an instance within a notification's delay (milliseconds)
rather than at its very next query as with one SQLite file; the database still decides every
race. If the listening connection breaks, the copy is kept (stale at worst: a name registered
elsewhere looks unknown, a released name keeps its old key) while a thread reconnects with
backoff and reloads it. The copy costs the tables' size in memory: ``max_users`` names of about
150 bytes each.

Give the password in ``PGPASSWORD`` (libpq reads it) rather than in the URL; messages and logs
name the database without it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from signaling.registry import (
    ROUNDING,
    Allowance,
    RegistryUnavailable,
    UsedUp,
    invite_digest,
    tokens_at,
)
from signaling.registry_breaker import CONNECT_WAIT, Conn, WriterBreaker
from signaling.registry_schema import CHANNEL, VERSIONS_TABLE, pending

log = logging.getLogger("signaling.registry")

TIMEOUT = 2.0  # seconds a statement (or a lock, or an unanswered packet) may take
RETRY = 0.5  # first pause before reconnecting; doubles up to MAX_RETRY (writes: the breaker's)
MAX_RETRY = 30.0  # the listening connection, in its thread
MIGRATION_TIMEOUT_MS = 60_000  # one migration, or waiting for another instance's
USED_KEPT = 4_096  # invitations this instance used, whose late "added" notice is ignored
CLEANUP_EVERY = 16  # takes of registration allowances between two cleanups of full buckets
LOCK_KEY = 0x766F_6963_6572_6567  # pg_advisory_xact_lock key of migrations ("voiceregg")

T = TypeVar("T")


def describe(url: str) -> str:
    """The database a URL names, for messages: never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "(an unreadable postgresql:// URL)"
    where = f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}"
    return f"postgresql {parts.get('dbname') or parts.get('user') or '?'} on {where}"


def migrate_postgres(conn: Conn, where: str) -> int:
    """Bring the database to the latest schema; the version it had. One transaction under an
    advisory lock: instances starting together wait for the first, which migrates alone."""
    with conn.transaction():
        conn.execute(
            "SELECT set_config('statement_timeout', %s, true)", (str(MIGRATION_TIMEOUT_MS),)
        )
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(VERSIONS_TABLE)
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        applied = int(row[0]) if row else 0
        for migration in pending(applied, where):
            for statement in migration.postgres:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied) VALUES (%s, %s)",
                (migration.version, time.time()),
            )
    return applied


@dataclass
class _Snapshot:
    """A listening connection and the tables as they were once it listened."""

    conn: Conn
    owners: dict[str, bytes]
    invites: dict[bytes, tuple[str | None, float]]


class PostgresRegistry:
    """Registry in a PostgreSQL database (``postgresql://`` URL), read from a local copy."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT,
        retry: float = RETRY,
        connect_wait: float = CONNECT_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = describe(url)
        self._url, self._timeout, self._retry = url, timeout, retry
        self._owners: dict[str, bytes] = {}
        self._invites: dict[bytes, tuple[str | None, float]] = {}
        self._used: OrderedDict[bytes, None] = OrderedDict()  # digests we used, newest last
        self._takes = 0  # registration allowances taken: every CLEANUP_EVERY, a cleanup
        self._bound: dict[str, dict[bytes, float]] = {}  # name -> its invitations' expiries
        self._writer = WriterBreaker(
            self._connect, self.where, retry=retry, wait=connect_wait, clock=clock
        )
        self._listener: Conn | None = None
        self._lock = threading.Lock()  # guards _pending and _closed against the reconnector
        self._pending: _Snapshot | None = None
        self._closed = False
        self._stop = threading.Event()
        self._reconnector: threading.Thread | None = None
        try:
            first = self._connect()  # at start, libpq's own timeouts: nothing runs yet
            self._writer.use(first)
            migrate_postgres(first, self.where)
            self._install(self._snapshot())
        except psycopg.Error as exc:
            self.close()
            raise RegistryUnavailable(f"db: cannot open the registry {self.where}: {exc}") from None
        except BaseException:
            self.close()
            raise

    # --- the Registry protocol -------------------------------------------------------------

    def claim(self, user: str, key: bytes) -> bool:
        self._sync()
        owner = self._owners.get(user)
        if owner is None:
            owner = self._write(lambda conn: self._insert_user(conn, user, bytes(key)))
        return owner == key

    def exists(self, user: str) -> bool:
        self._sync()
        return user in self._owners

    def key_of(self, user: str) -> bytes | None:
        self._sync()
        return self._owners.get(user)

    def count(self) -> int:
        self._sync()
        return len(self._owners)

    def release(self, user: str) -> bool:
        self._sync()
        released = self._write(
            lambda conn: conn.execute("DELETE FROM users WHERE name = %s", (user,)).rowcount == 1
        )
        self._owners.pop(user, None)
        return released

    def add_invite(self, token: str, user: str | None, expires: float) -> None:
        self._sync()
        digest = invite_digest(token)
        self._write(
            lambda conn: conn.execute(
                'INSERT INTO invites (digest, "user", expires) VALUES (%s, %s, %s)',
                (digest, user, float(expires)),
            )
        )
        self._put_invite(digest, user, float(expires))

    def redeem(
        self, token: str, user: str, key: bytes, now: float, *, bound_only: bool = False
    ) -> bool:
        self._sync()
        digest = invite_digest(token)
        bound, expires = self._invites.get(digest, ("", -math.inf))
        for_user = bound == user or (bound is None and not bound_only)
        if expires < now or not for_user or user in self._owners:
            return False  # decided by the copy: a bad invitation costs no round trip
        if not self._write(
            lambda conn: self._use_invite(conn, digest, user, bytes(key), now, bound_only)
        ):
            return False
        self._owners[user] = bytes(key)
        self._drop_invite(digest)
        self._used[digest] = None  # its "added" notice may still be on the way: never re-add
        while len(self._used) > USED_KEPT:
            self._used.popitem(last=False)
        return True

    def reserved(self, user: str, now: float) -> bool:
        self._sync()
        return any(expires >= now for expires in self._bound.get(user, {}).values())

    def take(self, allowances: Sequence[Allowance], now: float) -> UsedUp | None:
        self._sync()
        wanted = tuple(allowances)
        used_up = self._write(lambda conn: self._take(conn, wanted, float(now)))
        self._takes += 1
        if self._takes % CLEANUP_EVERY == 0:
            self._write(lambda conn: self._forget_full_buckets(conn, float(now)))
        return used_up

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, None
        self._stop.set()
        self._writer.close()
        for conn in (self._listener, pending.conn if pending else None):
            if conn is not None:
                conn.close()
        self._listener = None

    # --- the database ----------------------------------------------------------------------

    def _connect(self) -> Conn:
        ms = max(1, int(self._timeout * 1000))
        conn = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=max(2, math.ceil(self._timeout)),  # libpq's minimum is 2
            tcp_user_timeout=ms,  # a sent query nobody acknowledges
            keepalives=1,  # a reply that never comes from a host that vanished
            keepalives_idle=max(1, math.ceil(self._timeout)),
            keepalives_interval=1,
            keepalives_count=2,
            application_name="voice-signaling",
        )
        try:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('lock_timeout', %s, false)",
                (str(ms), str(ms)),
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _write(self, operation: Callable[[Conn], T]) -> T:
        """Run ``operation`` on the writing connection; RegistryUnavailable if the database
        cannot be reached (at once while the breaker is open). A write that finds the
        connection dead fails, and the next one opens another."""
        conn = self._writer.connection()
        try:
            return operation(conn)
        except (psycopg.errors.TransactionRollback, psycopg.errors.LockNotAvailable) as exc:
            # a serialization failure or deadlock, a lock timeout: the connection is fine
            raise RegistryUnavailable(f"the registry {self.where}: {exc}") from None
        except psycopg.OperationalError as exc:  # connection lost, or a timeout
            self._writer.lost()
            raise RegistryUnavailable(f"the registry {self.where}: {exc}") from None

    def _insert_user(self, conn: Conn, user: str, key: bytes) -> bytes | None:
        """Bind ``user`` to ``key`` unless someone has it; the owner afterwards."""
        row = conn.execute(
            "INSERT INTO users (name, key) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
            " RETURNING key",
            (user, key),
        ).fetchone()
        if row is None:  # taken meanwhile, perhaps by another instance: who has it?
            row = conn.execute("SELECT key FROM users WHERE name = %s", (user,)).fetchone()
        if row is None:
            return None
        owner = bytes(row[0])
        self._owners[user] = owner
        return owner

    @staticmethod
    def _use_invite(
        conn: Conn, digest: bytes, user: str, key: bytes, now: float, bound_only: bool
    ) -> bool:
        """In one transaction: use the invitation up and bind the name, or change nothing."""
        done = False
        with conn.transaction():
            used = conn.execute(
                "DELETE FROM invites WHERE digest = %s AND expires >= %s"
                ' AND ("user" = %s OR ("user" IS NULL AND NOT %s))',
                (digest, now, user, bound_only),
            ).rowcount
            if used == 1:
                done = (
                    conn.execute(
                        "INSERT INTO users (name, key) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (user, key),
                    ).rowcount
                    == 1
                )
            if not done:
                raise psycopg.Rollback()  # a bad invitation, or the name was taken meanwhile
        return done

    @staticmethod
    def _take(conn: Conn, allowances: tuple[Allowance, ...], now: float) -> UsedUp | None:
        """In one transaction: each bucket's arrival time moves on by its interval unless it is
        too far ahead (used up: nothing changes). The database decides, under the row lock,
        so instances taking at once each get their own registration or a refusal. Every take
        locks its rows in the same order (address, then server): two cannot deadlock."""
        used_up = None
        with conn.transaction():
            for allowance in allowances:
                row = conn.execute(
                    "INSERT INTO allowances AS a (bucket, arrival)"
                    " VALUES (%(bucket)s, %(now)s + %(interval)s)"
                    " ON CONFLICT (bucket) DO UPDATE"
                    " SET arrival = GREATEST(a.arrival, %(now)s) + %(interval)s"
                    " WHERE GREATEST(a.arrival, %(now)s) - %(now)s <= %(tolerance)s"
                    " RETURNING arrival",
                    {
                        "bucket": allowance.bucket,
                        "now": now,
                        "interval": allowance.interval,
                        "tolerance": allowance.tolerance + ROUNDING,
                    },
                ).fetchone()
                if row is None:
                    held = conn.execute(
                        "SELECT arrival FROM allowances WHERE bucket = %s", (allowance.bucket,)
                    ).fetchone()
                    before = None if held is None else float(held[0])
                    used_up = UsedUp(allowance, tokens_at(before, allowance, now))
                    raise psycopg.Rollback()
        return used_up

    @staticmethod
    def _forget_full_buckets(conn: Conn, now: float) -> None:
        """Delete the rows of buckets that are full again (as good as none), on their own,
        after the takes: rows another take holds locked are left for next time, so the
        cleanup never waits on a take nor makes one wait."""
        conn.execute(
            "DELETE FROM allowances WHERE bucket IN (SELECT bucket FROM allowances"
            " WHERE arrival <= %s FOR UPDATE SKIP LOCKED)",
            (now,),
        )

    # --- the copy --------------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        """A new listening connection, then the tables: every change committed after the
        snapshot arrives as a notification, and replaying one it already holds is harmless
        (each carries the row's state, in commit order)."""
        conn = self._connect()
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            owners = {str(n): bytes(k) for n, k in conn.execute("SELECT name, key FROM users")}
            invites = {
                bytes(d): (None if u is None else str(u), float(e))
                for d, u, e in conn.execute('SELECT digest, "user", expires FROM invites')
            }
        except BaseException:
            conn.close()
            raise
        return _Snapshot(conn, owners, invites)

    def _install(self, snapshot: _Snapshot) -> None:
        if self._listener is not None:
            self._listener.close()
        self._listener = snapshot.conn
        self._owners = snapshot.owners
        self._invites, self._bound = {}, {}
        for digest, (user, expires) in snapshot.invites.items():
            self._put_invite(digest, user, expires)

    def _sync(self) -> None:
        """Apply the changes announced so far, without waiting for any."""
        if self._pending is not None:
            with self._lock:
                snapshot, self._pending = self._pending, None
            if snapshot is not None:
                self._install(snapshot)
                self._writer.reset()  # the database answers again: writes may try at once
                log.info("registry_reconnected", extra={"fields": {"db": self.where}})
        listener = self._listener
        if listener is None:
            return
        try:
            notes = [note.payload for note in listener.notifies(timeout=0)]
        except psycopg.Error as exc:
            fields = {"db": self.where, "error": str(exc)}
            log.warning("registry_listener_lost", extra={"fields": fields})
            listener.close()
            self._listener = None
            self._start_reconnector()
            return
        for payload in notes:
            self._apply(payload)

    def _apply(self, payload: str) -> None:
        try:
            note = json.loads(payload)
            table, row, upsert = note["table"], note["row"], note["op"] == "upsert"
            if table == "users":
                if upsert:
                    self._owners[str(row["name"])] = _bytea(row["key"])
                else:
                    self._owners.pop(str(row["name"]), None)
            elif table == "invites":
                digest = _bytea(row["digest"])
                self._drop_invite(digest)
                if upsert and digest not in self._used:  # a late notice of one we used
                    user = row["user"]
                    self._put_invite(digest, None if user is None else str(user), row["expires"])
        except (ValueError, KeyError, TypeError):
            log.warning("registry_bad_notification", extra={"fields": {"db": self.where}})

    def _put_invite(self, digest: bytes, user: str | None, expires: float) -> None:
        self._invites[digest] = (user, float(expires))
        if user is not None:
            self._bound.setdefault(user, {})[digest] = float(expires)

    def _drop_invite(self, digest: bytes) -> None:
        user, _expires = self._invites.pop(digest, (None, 0.0))
        if user is not None:
            bound = self._bound.get(user, {})
            bound.pop(digest, None)
            if not bound:
                self._bound.pop(user, None)

    def _start_reconnector(self) -> None:
        if self._reconnector is not None and self._reconnector.is_alive():
            return
        self._reconnector = threading.Thread(
            target=self._reconnect, name="registry-reconnect", daemon=True
        )
        self._reconnector.start()

    def _reconnect(self) -> None:
        """Off the event loop: listen again and reload the copy, with backoff, until it works
        or the registry is closed; the loop installs the result at its next call."""
        delay = self._retry
        while not self._stop.wait(delay):
            try:
                snapshot = self._snapshot()
            except psycopg.Error as exc:
                fields = {"db": self.where, "error": str(exc), "retry_s": delay}
                log.warning("registry_reconnect_failed", extra={"fields": fields})
                delay = min(MAX_RETRY, delay * 2)
                continue
            with self._lock:
                if self._closed:
                    snapshot.conn.close()
                else:
                    self._pending = snapshot
            return


def _bytea(text: str) -> bytes:
    """A bytea value as ``to_jsonb`` writes it: ``\\x`` and hex digits."""
    if not text.startswith("\\x"):
        raise ValueError("not a bytea value")
    return bytes.fromhex(text[2:])
