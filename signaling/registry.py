"""Username -> Ed25519 key registry: the first key to log in with a name owns it for good.

SQLite by default so ownership survives a restart; an in-memory one for tests and benchmarks.
Lookups are small primary-key queries, cheap enough to run on the event loop; owners are cached
so routing to a known user never touches the disk.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol


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

    def close(self) -> None: ...


class MemoryRegistry:
    """Registry that forgets everything when the process ends."""

    def __init__(self) -> None:
        self._owners: dict[str, bytes] = {}

    def claim(self, user: str, key: bytes) -> bool:
        return self._owners.setdefault(user, bytes(key)) == key

    def exists(self, user: str) -> bool:
        return user in self._owners

    def key_of(self, user: str) -> bytes | None:
        return self._owners.get(user)

    def close(self) -> None:
        self._owners.clear()


class SQLiteRegistry:
    """Registry in one SQLite file (WAL); ``":memory:"`` works too."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS users ("
            " name TEXT PRIMARY KEY, key BLOB NOT NULL,"
            " created INTEGER NOT NULL DEFAULT (strftime('%s','now')))"
        )
        self._cache: dict[str, bytes] = {}

    def _owner(self, user: str) -> bytes | None:
        cached = self._cache.get(user)
        if cached is not None:
            return cached
        row = self._db.execute("SELECT key FROM users WHERE name = ?", (user,)).fetchone()
        if row is None:
            return None
        self._cache[user] = bytes(row[0])
        return self._cache[user]

    def claim(self, user: str, key: bytes) -> bool:
        owner = self._owner(user)
        if owner is None:
            self._db.execute(
                "INSERT OR IGNORE INTO users (name, key) VALUES (?, ?)", (user, bytes(key))
            )
            owner = self._owner(user)
        return owner == key

    def exists(self, user: str) -> bool:
        return self._owner(user) is not None

    def key_of(self, user: str) -> bytes | None:
        return self._owner(user)

    def close(self) -> None:
        self._db.close()
