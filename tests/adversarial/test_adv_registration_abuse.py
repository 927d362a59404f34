"""Registration abuse (issue 11, point 5): squatting names, growing the registry, TURN for all.

The audit registered 8,066 names from one address with one key in 10 s. Each attack below runs
against a real server on loopback with the real default allowances, and its control runs the
same attack with the allowances opened wide, to show that the attack itself works.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from signaling.config import Config
from signaling.server import serve_signaling
from tests.adversarial.accounts import log_in, loopback_alias_works, register
from tests.signaling.helpers import PERMISSIVE, make_user, server_config, url_of

DEFAULTS: dict[str, Any] = {name: getattr(Config(), name) for name in PERMISSIVE}
ATTEMPTS = 200


async def squat(url: str, prefix: str, count: int, source: str = "127.0.0.1") -> list[str]:
    return [await register(url, f"{prefix}{i:03d}", source=source) for i in range(count)]


def admin(*args: str) -> int:
    from signaling import admin as admin_cli  # the operator command, as a process would run it

    return admin_cli.main(list(args))


@pytest.mark.parametrize("defended", [True, False], ids=["defaults", "control-wide-open"])
async def test_one_address_cannot_squat_names(defended: bool) -> None:
    config = server_config(**(DEFAULTS if defended else PERMISSIVE))
    async with serve_signaling(config) as srv:
        started = time.monotonic()
        outcomes = await squat(url_of(srv), "sq", ATTEMPTS)
        elapsed = time.monotonic() - started
        registered = outcomes.count("welcome")
        print(f"\none address, {ATTEMPTS} names: {registered} registered in {elapsed:.1f} s")
        if not defended:
            assert registered == ATTEMPTS  # the attack works when nothing stops it
            assert srv.router.registry.count() == ATTEMPTS
            return
        burst = Config().registration_ip_burst
        assert outcomes[:burst] == ["welcome"] * burst
        assert set(outcomes[burst:]) == {"registration_limited"}
        assert srv.router.registry.count() == burst
        # Existing names are never limited, and another address still registers.
        assert await register(url_of(srv), "sq000") == "username_taken"  # a new key: not ours
        if loopback_alias_works("127.0.0.2"):
            assert await register(url_of(srv), "newcomer", source="127.0.0.2") == "welcome"


async def test_many_addresses_share_the_server_allowance() -> None:
    addresses = [f"127.0.0.{i}" for i in range(2, 17)]
    if not loopback_alias_works(addresses[-1]):
        pytest.skip("cannot bind 127.0.0.x aliases here")
    async with serve_signaling(server_config(**DEFAULTS)) as srv:
        per_address = Config().registration_ip_burst
        outcomes: list[str] = []
        for n, source in enumerate(addresses):
            outcomes += await squat(url_of(srv), f"a{n:02d}x", per_address, source)
        registered = outcomes.count("welcome")
        print(f"\n{len(addresses)} addresses x {per_address}: {registered} registered")
        assert registered == Config().registration_burst < len(outcomes)
        assert set(outcomes[registered:]) == {"registration_limited"}


async def test_the_account_cap_bounds_the_registry_even_with_invitations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "registry.sqlite3")
    async with serve_signaling(server_config(db=db, max_users=3)) as srv:
        url = url_of(srv)
        assert await squat(url, "cap", 5) == ["welcome"] * 3 + ["registration_limited"] * 2
        assert admin("invite", "--db", db) == 0  # an invitation skips the rates, not the cap
        token = capsys.readouterr().out.split()[0]
        assert await register(f"{url}/?invite={token}", "invited") == "registration_limited"
        assert admin("release", "cap000", "--db", db) == 0
        assert await register(f"{url}/?invite={token}", "invited") == "welcome"
        assert srv.router.registry.count() == 3


async def test_the_invite_policy_wants_a_valid_unused_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "registry.sqlite3")
    async with serve_signaling(server_config(db=db, registration="invite")) as srv:
        url = url_of(srv)
        assert await register(url, "walkin") == "registration_closed"
        assert await register(f"{url}/?invite=not-a-real-token-at-all", "walkin") == "bad_invite"
        assert admin("invite", "--count", "2", "--db", db) == 0
        first, second = capsys.readouterr().out.split()
        alice = make_user("alice")
        session, outcome = await log_in(f"{url}/?invite={first}", alice)
        assert outcome == "welcome"
        await session.close()
        assert await register(f"{url}/?invite={first}", "bob") == "bad_invite"  # used up
        session, outcome = await log_in(url, alice)  # a registered user needs no token
        assert outcome == "welcome"
        await session.close()
        assert admin("invite", "--user", "carol", "--db", db) == 0
        for_carol = capsys.readouterr().out.split()[0]
        assert await register(f"{url}/?invite={for_carol}", "dave") == "bad_invite"
        assert await register(url, "carol") == "username_taken"  # reserved for its invitation
        assert await register(f"{url}/?invite={second}", "carol") == "bad_invite"  # reserved
        assert await register(f"{url}/?invite={for_carol}", "carol") == "welcome"
        assert await register(f"{url}/?invite={second}", "erin") == "welcome"
        assert srv.router.registry.count() == 3


async def test_the_closed_policy_takes_only_invitations_bound_to_a_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "registry.sqlite3")
    async with serve_signaling(server_config(db=db, registration="closed")) as srv:
        url = url_of(srv)
        assert admin("invite", "--db", db) == 0
        unbound = capsys.readouterr().out.split()[0]
        assert admin("invite", "--user", "frank", "--db", db) == 0
        bound = capsys.readouterr().out.split()[0]
        assert await register(url, "frank") == "username_taken"  # reserved for the invitation
        assert await register(url, "grace") == "registration_closed"
        assert await register(f"{url}/?invite={unbound}", "grace") == "bad_invite"
        assert await register(f"{url}/?invite={bound}", "frank") == "welcome"
        assert srv.router.registry.count() == 1


async def test_a_user_who_lost_their_key_gets_the_name_back(tmp_path: Path) -> None:
    """The recovery path (docs/protocol.md): the operator releases the name for the new key's
    fingerprint, and nobody else can take it in between, though registration is open."""
    db = str(tmp_path / "registry.sqlite3")
    async with serve_signaling(server_config(db=db)) as srv:
        url = url_of(srv)
        old, new, mallory = make_user("alice"), make_user("alice"), make_user("alice")
        assert (await log_in(url, old))[1] == "welcome"
        assert (await log_in(url, new))[1] == "username_taken"  # the lost key owned it
        fingerprint = "ed25519:" + hashlib.sha256(new.pub).hexdigest()
        assert admin("release", "alice", "--fingerprint", fingerprint, "--db", db) == 0
        assert (await log_in(url, mallory))[1] == "username_taken"  # reserved for the new key
        session, outcome = await log_in(url, new)
        assert outcome == "welcome"
        assert srv.router.registry.key_of("alice") == new.pub
        bob, _ = await log_in(url, make_user("bob"))
        assert (await bob.lookup("alice"))["type"] == "key"
        await session.close()
        await bob.close()


@pytest.mark.parametrize("defended", [True, False], ids=["defaults", "control-wide-open"])
async def test_turn_credentials_are_rate_limited_per_user(defended: bool) -> None:
    turn = {"turn_secret": "coturn-secret", "turn_uris": ("turn:127.0.0.1:3478",)}
    limits = DEFAULTS if defended else PERMISSIVE
    async with serve_signaling(server_config(**limits, **turn)) as srv:
        user = make_user("hoarder")
        issued = 0
        for _ in range(3):  # reconnecting does not reset the allowance
            session, outcome = await log_in(url_of(srv), user)
            assert outcome == "welcome"
            answers = [await session.turn() for _ in range(10)]
            issued += sum(a["type"] == "turn_credentials" for a in answers)
            assert all(
                a["type"] == "turn_credentials" or a["code"] == "rate_limited" for a in answers
            )
            await session.close()
        print(f"\nTURN credentials issued to one user for 30 requests: {issued}")
        assert issued == (Config().turn_burst if defended else 30)
