"""The username registry: first key wins, for good, across reopenings of the SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from signaling.registry import MemoryRegistry, Registry, SQLiteRegistry


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_first_key_owns_the_name(kind: str, tmp_path: Path) -> None:
    registry: Registry = MemoryRegistry() if kind == "memory" else SQLiteRegistry(tmp_path / "r")
    assert not registry.exists("alice")
    assert registry.claim("alice", b"A" * 32)
    assert registry.claim("alice", b"A" * 32)  # the owner again
    assert not registry.claim("alice", b"B" * 32)
    assert registry.exists("alice") and not registry.exists("bob")
    registry.close()


def test_ownership_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    first = SQLiteRegistry(path)
    first.claim("alice", b"A" * 32)
    first.close()
    again = SQLiteRegistry(path)
    assert not again.claim("alice", b"B" * 32)
    assert again.claim("alice", b"A" * 32)
    again.close()


def test_two_processes_racing_for_a_name_agree(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    one, two = SQLiteRegistry(path), SQLiteRegistry(path)
    assert one.claim("carol", b"1" * 32)
    assert not two.claim("carol", b"2" * 32)  # INSERT OR IGNORE, then read the winner
    one.close()
    two.close()
