"""The registry behaves the same in SQLite and in PostgreSQL: first key wins, racing instances
agree, invitations are used once, released names are free, the registration rates are shared,
and a running server sees what the admin command (another process, another connection) wrote."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest

from signaling import admin
from signaling.config import Config
from signaling.registration import Registrations, key_invitation
from signaling.registry import Allowance, Registry, UsedUp
from tests.signaling.registry_backends import Backend, backend

__all__ = ["backend"]  # the fixture, parametrized over both databases

A, B, C = b"A" * 32, b"B" * 32, b"C" * 32
TOKEN, OTHER = "t" * 22, "u" * 22


def test_first_key_owns_the_name_across_reopening(backend: Backend) -> None:
    registry = backend.open()
    assert not registry.exists("alice") and registry.key_of("alice") is None
    assert registry.claim("alice", A)
    assert registry.claim("alice", A)  # the owner again
    assert not registry.claim("alice", B)
    assert registry.exists("alice") and not registry.exists("bob")
    assert registry.key_of("alice") == A and registry.count() == 1
    registry.close()
    again = backend.open()
    assert not again.claim("alice", B) and again.key_of("alice") == A
    again.close()


def test_two_instances_racing_for_a_name_agree(backend: Backend) -> None:
    one, two = backend.open(), backend.open()
    assert one.claim("carol", A)
    assert not two.claim("carol", B)  # the database decides, whatever two knew
    assert two.key_of("carol") == A
    assert backend.settled(lambda: one.count() == two.count() == 1)
    one.close()
    two.close()


def test_a_name_registered_on_one_instance_is_known_to_the_other(backend: Backend) -> None:
    one, two = backend.open(), backend.open()
    assert two.key_of("dave") is None
    assert one.claim("dave", A)
    assert backend.settled(lambda: two.key_of("dave") == A and two.exists("dave"))
    one.close()
    two.close()


def test_an_invitation_for_any_name_registers_one_name_once(backend: Backend) -> None:
    registry = backend.open()
    now = time.time()
    registry.add_invite(TOKEN, None, now + 60)
    assert not registry.redeem(OTHER, "alice", A, now)  # no such invitation
    assert not registry.redeem(TOKEN, "alice", A, now, bound_only=True)
    assert registry.redeem(TOKEN, "alice", A, now)
    assert registry.key_of("alice") == A
    assert not registry.redeem(TOKEN, "bob", B, now)  # used up
    assert not registry.exists("bob")
    registry.close()


def test_a_bound_invitation_reserves_its_name_until_used_or_expired(backend: Backend) -> None:
    registry = backend.open()
    now = time.time()
    registry.add_invite(TOKEN, "bob", now + 60)
    registry.add_invite(OTHER, "erin", now - 1)  # expired
    assert registry.reserved("bob", now) and not registry.reserved("alice", now)
    assert not registry.reserved("erin", now)
    assert not registry.redeem(OTHER, "erin", A, now)
    assert not registry.redeem(TOKEN, "carol", A, now)  # bound to another name
    assert registry.redeem(TOKEN, "bob", B, now, bound_only=True)
    assert registry.key_of("bob") == B and not registry.reserved("bob", now)
    registry.close()


def test_redeeming_a_taken_name_changes_nothing(backend: Backend) -> None:
    registry = backend.open()
    now = time.time()
    registry.add_invite(TOKEN, None, now + 60)
    assert registry.claim("alice", A)
    assert not registry.redeem(TOKEN, "alice", B, now)
    assert registry.key_of("alice") == A
    assert registry.redeem(TOKEN, "bob", B, now)  # the invitation was not used up
    registry.close()


def test_a_released_name_is_free_again(backend: Backend) -> None:
    registry = backend.open()
    assert registry.claim("alice", A)
    assert registry.release("alice") and not registry.release("alice")
    assert not registry.exists("alice") and registry.count() == 0
    assert registry.claim("alice", B)
    registry.close()


@pytest.mark.parametrize("how", ["plain", "fingerprint"])
def test_a_running_server_sees_the_admin_command_release_a_name(
    backend: Backend, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = backend.open()
    assert server.claim("alice", A)
    assert server.key_of("alice") == A  # now cached on the server side
    extra = ["--fingerprint", f"ed25519:{hashlib.sha256(C).hexdigest()}"] * (how == "fingerprint")
    assert admin.main(["release", "alice", "--db", backend.db, *extra]) == 0
    assert backend.settled(lambda: not server.exists("alice") and server.count() == 0)
    if how == "fingerprint":  # reserved for the new key: only it gets the name back
        assert backend.settled(lambda: server.reserved("alice", time.time()))
        for key, wins in ((B, False), (C, True)):  # as signaling.registration asks for a key
            invitation = key_invitation(hashlib.sha256(key).digest())
            assert server.redeem(invitation, "alice", key, time.time()) is wins
    assert admin.main(["show", "alice", "--db", backend.db]) == (0 if how == "fingerprint" else 1)
    server.close()


def test_tokens_from_the_admin_command_work_on_a_running_server(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    server = backend.open()
    assert admin.main(["invite", "--user", "bob", "--db", backend.db]) == 0
    token = capsys.readouterr().out.strip()
    assert backend.settled(lambda: server.reserved("bob", time.time()))
    assert server.redeem(token, "bob", B, time.time(), bound_only=True)
    assert admin.main(["show", "bob", "--db", backend.db]) == 0
    assert capsys.readouterr().out == f"bob ed25519:{hashlib.sha256(B).hexdigest()}\n"
    server.close()


def test_registration_rates_are_shared_by_every_instance_on_the_registry(
    backend: Backend,
) -> None:
    one, two = backend.open(), backend.open()
    now = time.time()
    server = Allowance("server", per_second=1.0, burst=3)
    address = Allowance("address 10.0.0.0", per_second=1.0, burst=2)
    assert one.take((address, server), now) is None
    assert two.take((address, server), now) is None
    # the address's 2 went, on two instances; it holds none
    assert one.take((address, server), now) == UsedUp(address, 0.0)
    assert two.take((address, server), now) == UsedUp(address, 0.0)
    # All or none: the refused address spent none of the server's.
    other = Allowance("address 10.0.0.9", per_second=1.0, burst=2)
    assert two.take((other, server), now) is None
    assert one.take((other, server), now) == UsedUp(server, 0.0)  # 3 in all, for both
    assert two.take((Allowance("address 10.9.9.9", 1.0, 2), server), now + 0.5) == UsedUp(
        server, pytest.approx(0.5)
    )
    assert one.take((address, server), now + 1.0) is None  # a second later: one more each
    assert two.take((address, server), now + 1.0) == UsedUp(address, 0.0)
    one.close()
    two.close()


class CountedTakes:
    """A real registry that counts the takes of registration allowances reaching it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.takes = 0

    def take(self, allowances: Sequence[Allowance], now: float) -> UsedUp | None:
        self.takes += 1
        return self.registry.take(allowances, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)


def test_instances_sharing_a_registry_register_no_more_than_one_would(backend: Backend) -> None:
    """Two instances' registration policies on one registry: the burst of the whole server is
    the configured one, not one per instance; and once the database refused an instance, that
    instance refuses on its own, without asking it again (a flood stays off the database)."""
    config = Config(db=backend.db, registration_burst=3, registration_ip_burst=100)
    registries = [CountedTakes(backend.open()), CountedTakes(backend.open())]
    policies = [Registrations(config, 0.0), Registrations(config, 0.0)]
    wall = time.time()

    def attempt(n: int) -> str:
        i = n % 2
        refusal = policies[i].register(
            cast(Registry, registries[i]), f"user{n}", bytes([n]) * 32, net="10.0.0.1",
            invite=None, now=0.0, wall=wall,
        )  # fmt: skip
        return "ok" if refusal is None else refusal.message

    assert [attempt(n) for n in range(6)] == ["ok"] * 3 + ["too many new usernames; try later"] * 3
    # three grants, then one refusal from the database for each instance, then none asked
    assert [r.takes for r in registries] == [3, 2]
    assert {attempt(n) for n in range(6, 40)} == {"too many new usernames; try later"}
    assert [r.takes for r in registries] == [3, 2]
    assert backend.settled(lambda: registries[0].count() == registries[1].count() == 3)
    for registry in registries:
        registry.close()
