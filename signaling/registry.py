"""Username -> Ed25519 key registry, and the invitations that let a new name in.

The first key to log in with a name owns it for good, unless an operator releases the name
(``voice-signaling admin release``). Whether a *new* name may be registered at all is the
registration policy's decision (:mod:`signaling.registration`); this module only stores.

Invitations are stored as SHA-256 digests of the token, so a copy of the database holds no
usable invitation. An invitation may be bound to one username: while it is outstanding, that
name is reserved for it.

SQLite by default so ownership survives a restart; an in-memory one for tests and benchmarks;
PostgreSQL (``db`` a ``postgresql://`` URL) for several instances sharing one registry
(:mod:`signaling.registry_postgres`). SQLite lookups are small primary-key queries, cheap enough
to run on the event loop; owners are kept in a bounded cache that is dropped whenever another
process (the admin command) wrote the file. Either database carries a schema version and is
migrated on open (:mod:`signaling.registry_schema`).

The registration rates live here too (:meth:`Registry.take`): instances that share a registry
share them, so N instances behind a load balancer register no more names an hour than one.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from signaling.errors import ConfigError, SignalingError
from signaling.registry_schema import migrate_sqlite

CACHE_SIZE = 4_096
BUSY_MS = 2_000  # SQLite: how long a statement waits for another connection's lock
ROUNDING = 1e-6  # seconds: a float's rounding of an arrival time never refuses a registration
URL_SCHEMES = ("postgresql://", "postgres://")


class RegistryUnavailable(SignalingError, ConnectionError):
    """The registry's database cannot be reached now (a network database): the one request
    fails, the server goes on, and the next request tries again."""


def is_database_url(db: str) -> bool:
    """Whether the ``db`` setting names a PostgreSQL database rather than an SQLite file."""
    return db.startswith(URL_SCHEMES)


def invite_digest(token: str) -> bytes:
    """What the registry stores and compares for an invitation token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Allowance:
    """A registration rate every instance on one registry shares: ``burst`` at once, then
    ``per_second``. Stored as one number per bucket, its theoretical arrival time (GCRA: the
    token bucket of :mod:`signaling.ratelimit`, in a form one SQL statement can update)."""

    bucket: str  # "server", or "address <net>"
    per_second: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds one registration adds to the bucket's arrival time."""
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        """How far ahead of now the arrival time may be and still take one: the burst."""
        return (self.burst - 1) * self.interval


@dataclass(frozen=True, slots=True)
class UsedUp:
    """A shared allowance that refused a registration, and the registrations it holds (less
    than one): what an instance's own bucket is set to, so it refuses on its own until then."""

    allowance: Allowance
    tokens: float


def tokens_at(arrival: float | None, allowance: Allowance, now: float) -> float:
    """The registrations a bucket with this arrival time holds at ``now`` (0..burst)."""
    if arrival is None:
        return float(allowance.burst)
    ahead = max(arrival, now) - now
    return min(float(allowance.burst), max(0.0, allowance.burst - ahead / allowance.interval))


def next_arrival(arrival: float | None, allowance: Allowance, now: float) -> float | None:
    """The bucket's arrival time after taking one at ``now``, or None if it is used up.
    ``arrival`` None: a bucket never used (or forgotten once full), as good as a new one."""
    start = now if arrival is None else max(arrival, now)
    if start - now > allowance.tolerance + ROUNDING:
        return None
    return start + allowance.interval


class Registry(Protocol):
    def claim(self, user: str, key: bytes) -> bool:
        """Bind ``user`` to ``key`` if it is free; True iff ``key`` owns ``user`` afterwards."""
        ...

    def exists(self, user: str) -> bool:
        """Whether any key owns ``user``."""
        ...

    def key_of(self, user: str) -> bytes | None:
        """The key that owns ``user`` (the key directory), or None if nobody does."""
        ...

    def count(self) -> int:
        """How many names are registered."""
        ...

    def release(self, user: str) -> bool:
        """Forget who owns ``user`` (the name is free again); False if nobody owned it."""
        ...

    def add_invite(self, token: str, user: str | None, expires: float) -> None:
        """Store an invitation, usable until ``expires`` (wall clock), for ``user`` or any name."""
        ...

    def redeem(
        self, token: str, user: str, key: bytes, now: float, *, bound_only: bool = False
    ) -> bool:
        """In one step: if ``token`` is a valid invitation for ``user`` (bound to that name, or
        to none unless ``bound_only``) and the name is free, bind it to ``key`` and use the
        invitation up. False (and nothing changes) otherwise."""
        ...

    def reserved(self, user: str, now: float) -> bool:
        """Whether an outstanding invitation is bound to ``user``."""
        ...

    def take(self, allowances: Sequence[Allowance], now: float) -> UsedUp | None:
        """Spend one registration of each of ``allowances`` at ``now`` (wall clock), all or
        none, in one step every instance on this registry sees: None if they were spent, else
        the first that is used up (and nothing was spent)."""
        ...

    def close(self) -> None: ...


class MemoryRegistry:
    """Registry that forgets everything when the process ends."""

    def __init__(self) -> None:
        self._owners: dict[str, bytes] = {}
        self._invites: dict[bytes, tuple[str | None, float]] = {}
        self._arrivals: dict[str, float] = {}

    def claim(self, user: str, key: bytes) -> bool:
        return self._owners.setdefault(user, bytes(key)) == key

    def exists(self, user: str) -> bool:
        return user in self._owners

    def key_of(self, user: str) -> bytes | None:
        return self._owners.get(user)

    def count(self) -> int:
        return len(self._owners)

    def release(self, user: str) -> bool:
        return self._owners.pop(user, None) is not None

    def add_invite(self, token: str, user: str | None, expires: float) -> None:
        self._invites[invite_digest(token)] = (user, expires)

    def redeem(
        self, token: str, user: str, key: bytes, now: float, *, bound_only: bool = False
    ) -> bool:
        digest = invite_digest(token)
        bound, expires = self._invites.get(digest, ("", float("-inf")))
        for_user = bound == user or (bound is None and not bound_only)
        if expires < now or not for_user or user in self._owners:
            return False
        self._owners[user] = bytes(key)
        del self._invites[digest]
        return True

    def reserved(self, user: str, now: float) -> bool:
        return any(u == user and expires >= now for u, expires in self._invites.values())

    def take(self, allowances: Sequence[Allowance], now: float) -> UsedUp | None:
        arrivals: dict[str, float] = {}
        for allowance in allowances:
            arrival = next_arrival(self._arrivals.get(allowance.bucket), allowance, now)
            if arrival is None:
                held = tokens_at(self._arrivals.get(allowance.bucket), allowance, now)
                return UsedUp(allowance, held)
            arrivals[allowance.bucket] = arrival
        self._arrivals = {b: t for b, t in self._arrivals.items() if t > now}  # full: forget
        self._arrivals.update(arrivals)
        return None

    def close(self) -> None:
        self._owners.clear()
        self._invites.clear()
        self._arrivals.clear()


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch to write-ahead logging. Instances opening one new file together: the switch
    needs the file to itself, and SQLite reports "database is locked" at once rather than
    calling the busy handler, so wait here, as long as any lock would be waited for."""
    deadline = time.monotonic() + BUSY_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class SQLiteRegistry:
    """Registry in one SQLite file (WAL); ``":memory:"`` works too."""

    def __init__(self, path: str | Path, *, cache_size: int = CACHE_SIZE) -> None:
        if is_database_url(str(path)):
            raise ConfigError("db: a postgresql:// URL is no SQLite file: see registry_open")
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")  # first: others wait for locks
            _use_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            migrate_sqlite(self._db, str(path))
        except BaseException:
            self._db.close()
            raise
        self._cache_size = max(0, cache_size)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._count: int | None = None
        self._version = self._data_version()

    def _data_version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _sync(self) -> None:
        """Drop what is cached if another connection (an admin command) changed the file."""
        version = self._data_version()
        if version != self._version:
            self._version = version
            self._cache.clear()
            self._count = None

    def _owner(self, user: str) -> bytes | None:
        self._sync()
        cached = self._cache.get(user)
        if cached is not None:
            self._cache.move_to_end(user)
            return cached
        row = self._db.execute("SELECT key FROM users WHERE name = ?", (user,)).fetchone()
        if row is None:
            return None
        owner = bytes(row[0])
        self._remember(user, owner)
        return owner

    def _remember(self, user: str, key: bytes) -> None:
        if self._cache_size == 0:
            return
        self._cache[user] = key
        self._cache.move_to_end(user)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def claim(self, user: str, key: bytes) -> bool:
        owner = self._owner(user)
        if owner is None:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO users (name, key) VALUES (?, ?)", (user, bytes(key))
            )
            if cursor.rowcount == 1 and self._count is not None:
                self._count += 1
            owner = self._owner(user)
        return owner == key

    def exists(self, user: str) -> bool:
        return self._owner(user) is not None

    def key_of(self, user: str) -> bytes | None:
        return self._owner(user)

    def count(self) -> int:
        self._sync()
        if self._count is None:
            self._count = int(self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0])
        return self._count

    def release(self, user: str) -> bool:
        self._sync()
        self._cache.pop(user, None)
        released = self._db.execute("DELETE FROM users WHERE name = ?", (user,)).rowcount == 1
        if released and self._count is not None:
            self._count -= 1
        return released

    def add_invite(self, token: str, user: str | None, expires: float) -> None:
        self._db.execute(
            "INSERT INTO invites (digest, user, expires) VALUES (?, ?, ?)",
            (invite_digest(token), user, float(expires)),
        )

    def redeem(
        self, token: str, user: str, key: bytes, now: float, *, bound_only: bool = False
    ) -> bool:
        self._sync()
        digest = invite_digest(token)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            used = self._db.execute(
                "DELETE FROM invites WHERE digest = ? AND expires >= ?"
                " AND (user = ? OR (user IS NULL AND NOT ?))",
                (digest, float(now), user, bound_only),
            ).rowcount
            added = 0
            if used == 1:
                added = self._db.execute(
                    "INSERT OR IGNORE INTO users (name, key) VALUES (?, ?)", (user, bytes(key))
                ).rowcount
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if added != 1:
            self._db.execute("ROLLBACK")  # a bad invitation, or the name was taken meanwhile
            return False
        self._db.execute("COMMIT")
        self._remember(user, bytes(key))
        if self._count is not None:
            self._count += 1
        return True

    def reserved(self, user: str, now: float) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM invites WHERE user = ? AND expires >= ? LIMIT 1", (user, float(now))
        ).fetchone()
        return row is not None

    def take(self, allowances: Sequence[Allowance], now: float) -> UsedUp | None:
        self._db.execute("BEGIN IMMEDIATE")  # the write lock: instances on this file queue
        try:
            used_up = None
            for allowance in allowances:
                row = self._db.execute(
                    "SELECT arrival FROM allowances WHERE bucket = ?", (allowance.bucket,)
                ).fetchone()
                before = None if row is None else float(row[0])
                arrival = next_arrival(before, allowance, now)
                if arrival is None:
                    used_up = UsedUp(allowance, tokens_at(before, allowance, now))
                    break
                self._db.execute(
                    "INSERT INTO allowances (bucket, arrival) VALUES (?, ?)"
                    " ON CONFLICT (bucket) DO UPDATE SET arrival = excluded.arrival",
                    (allowance.bucket, arrival),
                )
            if used_up is None:
                self._db.execute("DELETE FROM allowances WHERE arrival <= ?", (float(now),))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("ROLLBACK" if used_up is not None else "COMMIT")
        return used_up

    def close(self) -> None:
        self._db.close()
