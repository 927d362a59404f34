"""Registration policy, invitations and the admin command: pure units and the registry file."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from signaling.cli import main as cli_main
from signaling.config import Config
from signaling.errors import ConfigError
from signaling.registration import (
    Refusal,
    Registrations,
    key_invitation,
    parse_fingerprint,
)
from signaling.registry import MemoryRegistry, Registry, RegistryUnavailable, SQLiteRegistry
from signaling.router import Router
from tests.signaling.helpers import make_user
from tests.signaling.test_signaling_router import closes, frames

KEY = b"K" * 32
OTHER = b"O" * 32
NOW = 1_700_000_000.0  # wall clock for invitation expiry


def policy(**changes: Any) -> Registrations:
    return Registrations(Config(db="", **changes), 0.0)


def attempt(
    regs: Registrations,
    registry: Registry,
    user: str,
    *,
    key: bytes = KEY,
    net: str = "10.0.0.1",
    invite: str | None = None,
    now: float = 0.0,
) -> str:
    refusal: Refusal | None = regs.register(
        registry, user, key, net=net, invite=invite, now=now, wall=NOW + now
    )
    return "ok" if refusal is None else refusal.code


def test_open_policy_per_address_then_server_wide_then_cap() -> None:
    regs = policy(registration_ip_burst=2, registrations_per_ip_per_hour=3600, registration_burst=3)
    registry = MemoryRegistry()
    assert [attempt(regs, registry, f"a{i}xx") for i in range(3)] == [
        "ok",
        "ok",
        "registration_limited",
    ]
    assert attempt(regs, registry, "a3xx", now=1.0) == "ok"  # one token back after a second
    assert attempt(regs, registry, "b0xx", net="10.0.0.2") == "registration_limited"  # server
    # The address is checked first: its refusals do not use up the server's allowance.
    regs = policy(registration_ip_burst=1, registration_burst=2)
    registry = MemoryRegistry()
    outcomes = [attempt(regs, registry, f"c{i}xx") for i in range(5)]
    assert outcomes == ["ok"] + ["registration_limited"] * 4
    assert attempt(regs, registry, "d0xx", net="10.0.0.9") == "ok"
    capped = policy(max_users=1)
    assert attempt(capped, registry, "e0xx", net="10.0.0.3") == "registration_limited"
    assert registry.count() == 2


def test_invite_and_closed_policies() -> None:
    registry = MemoryRegistry()
    registry.add_invite("t" * 22, None, NOW + 60)
    registry.add_invite("b" * 22, "bound", NOW + 60)
    registry.add_invite("x" * 22, None, NOW - 1)  # expired
    invite = policy(registration="invite")
    assert attempt(invite, registry, "walkin") == "registration_closed"
    assert attempt(invite, registry, "walkin", invite="x" * 22) == "bad_invite"
    assert attempt(invite, registry, "walkin", invite="short") == "bad_invite"
    closed = policy(registration="closed")
    assert attempt(closed, registry, "walkin") == "registration_closed"
    assert attempt(closed, registry, "walkin", invite="t" * 22) == "bad_invite"  # not bound
    assert attempt(closed, registry, "bound") == "username_taken"  # reserved
    assert attempt(closed, registry, "other", invite="b" * 22) == "bad_invite"
    assert attempt(closed, registry, "bound", invite="b" * 22) == "ok"
    assert attempt(invite, registry, "walkin", invite="t" * 22) == "ok"
    assert attempt(invite, registry, "again", invite="t" * 22) == "bad_invite"  # used up
    assert registry.key_of("bound") == KEY and registry.key_of("walkin") == KEY


def test_a_name_reserved_for_a_key_takes_that_key_under_any_policy() -> None:
    registry = MemoryRegistry()
    registry.add_invite(key_invitation(hashlib.sha256(KEY).digest()), "alice", NOW + 60)
    registry.add_invite("u" * 22, None, NOW + 60)
    for registration in ("open", "invite", "closed"):
        regs = policy(registration=registration)
        assert attempt(regs, registry, "alice", key=OTHER) == "username_taken"
        assert attempt(regs, registry, "alice", key=OTHER, invite="u" * 22) == "bad_invite"
    assert attempt(policy(registration="closed"), registry, "alice") == "ok"
    assert not registry.reserved("alice", NOW)
    # The key form is never a URL token.
    assert attempt(policy(), registry, "bob", invite=key_invitation(b"\x00" * 32)) == "bad_invite"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_registry_invitations_release_and_count(kind: str, tmp_path: Path) -> None:
    registry: Registry = MemoryRegistry() if kind == "memory" else SQLiteRegistry(tmp_path / "r")
    registry.add_invite("tok-for-anyone-123", None, NOW + 10)
    registry.add_invite("tok-for-carol-1234", "carol", NOW + 10)
    assert registry.reserved("carol", NOW) and not registry.reserved("carol", NOW + 11)
    assert not registry.redeem("tok-for-carol-1234", "dave", KEY, NOW)
    assert not registry.redeem("tok-for-anyone-123", "dave", KEY, NOW, bound_only=True)
    assert not registry.redeem("tok-for-anyone-123", "dave", KEY, NOW + 11)  # expired
    assert registry.claim("erin", OTHER)
    assert not registry.redeem("tok-for-anyone-123", "erin", KEY, NOW)  # taken: kept unused
    assert registry.redeem("tok-for-anyone-123", "dave", KEY, NOW)
    assert not registry.redeem("tok-for-anyone-123", "fred", KEY, NOW)
    assert registry.redeem("tok-for-carol-1234", "carol", KEY, NOW, bound_only=True)
    assert registry.count() == 3
    assert registry.release("dave") and not registry.release("dave")
    assert registry.count() == 2 and registry.key_of("dave") is None
    assert registry.claim("dave", OTHER)  # free again, for any key
    registry.close()


def test_the_registry_cache_is_bounded_and_sees_another_process(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    server = SQLiteRegistry(path, cache_size=8)
    for i in range(100):
        assert server.claim(f"user{i:03d}", KEY)
    for i in range(100):
        assert server.key_of(f"user{i:03d}") == KEY
    assert len(server._cache) == 8
    assert server.count() == 100
    admin = SQLiteRegistry(path)  # the admin command, while the server runs
    assert admin.release("user099")
    admin.add_invite("tok-for-user099-xx", "user099", NOW + 60)
    admin.close()
    assert server.key_of("user099") is None and server.count() == 99
    assert server.reserved("user099", NOW)
    assert server.redeem("tok-for-user099-xx", "user099", OTHER, NOW)
    assert server.key_of("user099") == OTHER and server.count() == 100
    server.close()
    with sqlite3.connect(path) as db:
        stored = [row[0] for row in db.execute("SELECT digest FROM invites")]
    assert stored == []  # used up; and only digests are ever stored


def test_fingerprints_as_voice_id_prints_them() -> None:
    digest = hashlib.sha256(KEY).digest()
    human = base64.b32encode(digest).decode().rstrip("=")
    grouped = " ".join(human[i : i + 4] for i in range(0, 52, 4))
    assert parse_fingerprint("ed25519:" + digest.hex()) == digest
    assert parse_fingerprint("ED25519:" + digest.hex().upper()) == digest
    assert parse_fingerprint(grouped) == digest
    assert parse_fingerprint(grouped.lower().replace(" ", "-")) == digest
    for bad in ("", "ed25519:abc", human[:-1], human + "A", "ed25519:" + "zz" * 32, "1" * 52):
        with pytest.raises(ValueError):
            parse_fingerprint(bad)


def test_registration_settings_are_checked() -> None:
    bad: dict[str, Any]
    for bad in ({"registration": "maybe"}, {"max_users": 0}, {"lookup_burst": 0}):
        with pytest.raises(ConfigError):
            Config(**bad)
    env = {"VOICE_SIGNALING_REGISTRATION": "invite", "VOICE_SIGNALING_TURN_PER_MINUTE": "0.5"}
    config = Config.from_sources(env, {"max_users": "7"})
    assert (config.registration, config.turn_per_minute, config.max_users) == ("invite", 0.5, 7)


def test_admin_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "registry.sqlite3")
    registry = SQLiteRegistry(db)
    registry.claim("alice", KEY)
    registry.close()
    assert cli_main(["admin", "show", "alice", "--db", db]) == 0
    assert capsys.readouterr().out == f"alice ed25519:{hashlib.sha256(KEY).hexdigest()}\n"
    assert cli_main(["admin", "invite", "--count", "3", "--db", db]) == 0
    tokens = capsys.readouterr().out.split()
    assert len(set(tokens)) == 3 and all(len(t) == 22 for t in tokens)
    assert cli_main(["admin", "release", "nobody", "--db", db]) == 1
    fp = "ed25519:" + hashlib.sha256(OTHER).hexdigest()
    assert cli_main(["admin", "release", "alice", "--fingerprint", fp, "--db", db]) == 0
    assert cli_main(["admin", "show", "alice", "--db", db]) == 1
    assert cli_main(["admin", "release", "bob", "--invite", "--db", db]) == 0
    bob_token = capsys.readouterr().out.split()[0]
    registry = SQLiteRegistry(db)
    assert registry.reserved("alice", NOW) and registry.reserved("bob", NOW)
    assert registry.redeem(key_invitation(hashlib.sha256(OTHER).digest()), "alice", OTHER, NOW)
    assert registry.redeem(bob_token, "bob", KEY, NOW, bound_only=True)
    assert registry.redeem(tokens[0], "carol", KEY, NOW)
    registry.close()
    capsys.readouterr()
    for bad in (
        ["show", "Alice"],
        ["invite", "--fingerprint", fp],  # a fingerprint needs a name
        ["release", "alice", "--fingerprint", "nope"],
        ["invite", "--count", "0"],
        ["invite", "--ttl", "-1"],
    ):
        assert cli_main(["admin", *bad, "--db", db]) == 2
    assert cli_main(["admin", "invite", "--db", ":memory:"]) == 2
    assert "voice-signaling admin:" in capsys.readouterr().err


class AwayRegistry(MemoryRegistry):
    """A registry whose database is away for registrations (reads still answer)."""

    def take(self, allowances: Any, now: float) -> Any:
        raise RegistryUnavailable("the registry postgresql voice on db:5432: gone")


def test_a_registration_while_the_database_is_away_is_refused_retryably() -> None:
    known = make_user("known", seed=1)
    registry = AwayRegistry()
    registry.claim("known", known.pub)
    router = Router(
        Config(db=""), registry, clock=lambda: 0.0, wall_clock=lambda: NOW,
        random_bytes=lambda n: b"\x07" * n,
    )  # fmt: skip
    sid, actions = router.connect("10.0.0.1")
    refused = router.receive(sid, make_user("newcomer", seed=3).login_frame(frames(actions)[0]))
    assert frames(refused, sid)[-1]["code"] == "internal"  # what clients retry
    assert closes(refused) == [(sid, 4011, "internal")]
    # The router goes on serving everyone else: a known name logs in.
    other, actions = router.connect("10.0.0.2")
    welcome = router.receive(other, known.login_frame(frames(actions)[0]))
    assert frames(welcome, other)[-1]["type"] == "welcome"
