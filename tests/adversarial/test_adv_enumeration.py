"""Presence and enumeration (issue 11, point 6): what one registered user can learn of others.

Any logged-in user may ask who owns a name (``lookup``: registered or not, and the key) and
whether someone is online (a ``send`` answered ``sent`` or ``offline``). Both are now paid from
one per-user directory allowance: a lookup, or a send to a name this session has exchanged no
envelope with, spends a token *before* the server looks at the name, so past the allowance
every name gets the same ``rate_limited``, whoever it is. Sessions that talk to each other
(a call) spend nothing more. Each attack runs with the real defaults, and its control with the
allowance opened wide, which shows the attack working. docs/protocol.md, "What the server
reveals, and to whom", has the decision on ``sent`` versus ``offline``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from signaling.config import Config
from signaling.server import SignalingServer, serve_signaling
from tests.adversarial.accounts import Session, log_in
from tests.signaling.helpers import make_user, server_config, url_of

DEFAULTS: dict[str, Any] = {
    "lookup_burst": Config().lookup_burst,
    "lookups_per_minute": Config().lookups_per_minute,
}
# The message rate (20/s by default) alone would let one user probe 72,000 names an hour; it is
# opened wide here so that only the directory allowance stands between the spy and the names.
FAST = {"rate": 100_000, "burst": 100_000}
PROBES = 200
MEMBERS = 30  # registered users among the probed names; the first ONLINE stay connected
ONLINE = 10


def member(i: int) -> str:
    return f"member{i:03d}"


# Every fifth probe names a member (members 0-29 at probes 0, 5, ..., 145); the rest nobody.
NAMES = [
    member(i // 5) if i % 5 == 0 and i // 5 < MEMBERS else f"nobody{i:03d}" for i in range(PROBES)
]


async def population(srv: SignalingServer) -> list[Session]:
    online = []
    for i in range(MEMBERS):
        session, outcome = await log_in(url_of(srv), make_user(member(i)))
        assert outcome == "welcome"
        if i < ONLINE:
            online.append(session)
        else:
            await session.close()
    return online


def tally(answers: list[dict[str, Any]]) -> Counter[str]:
    return Counter(a["type"] if a["type"] != "error" else a["code"] for a in answers)


def most_answered(elapsed: float) -> float:
    """The allowance, plus what it earned back while the probes ran."""
    return Config().lookup_burst + elapsed * Config().lookups_per_minute / 60 + 1


def refused_kinds(answers: list[dict[str, Any]]) -> set[str]:
    """Which kinds of name (online member, offline member, nobody) got ``rate_limited``."""
    kinds = set()
    for name, answer in zip(NAMES, answers, strict=True):
        if answer.get("code") == "rate_limited":
            if name.startswith("nobody"):
                kinds.add("nobody")
            else:
                kinds.add("online" if int(name[-3:]) < ONLINE else "offline")
    return kinds


@pytest.mark.parametrize("defended", [True, False], ids=["defaults", "control-wide-open"])
async def test_lookups_cannot_enumerate_the_directory(defended: bool) -> None:
    async with serve_signaling(server_config(**FAST, **(DEFAULTS if defended else {}))) as srv:
        online = await population(srv)
        spy = make_user("spy")
        session, _ = await log_in(url_of(srv), spy)
        started = time.monotonic()
        answers = [await session.lookup(name) for name in NAMES]
        elapsed = time.monotonic() - started
        got = tally(answers)
        print(f"\n{PROBES} lookups in {elapsed:.2f} s: {dict(got)}")
        if not defended:  # the attack: every member found, with their key
            assert got == {"key": MEMBERS, "unknown_user": PROBES - MEMBERS}
        else:
            assert got["key"] + got["unknown_user"] <= most_answered(elapsed)
            assert got["rate_limited"] >= PROBES - most_answered(elapsed)
            assert refused_kinds(answers) == {"online", "offline", "nobody"}  # all alike
            await session.close()  # reconnecting does not bring the allowance back
            session, _ = await log_in(url_of(srv), spy)
            assert (await session.lookup(member(29)))["code"] == "rate_limited"
        for s in [*online, session]:
            await s.close()


@pytest.mark.parametrize("defended", [True, False], ids=["defaults", "control-wide-open"])
async def test_sends_cannot_probe_who_is_online(defended: bool) -> None:
    async with serve_signaling(server_config(**FAST, **(DEFAULTS if defended else {}))) as srv:
        online = await population(srv)
        spy, _ = await log_in(url_of(srv), make_user("spy"))
        started = time.monotonic()
        answers = [await spy.send(name) for name in NAMES]
        elapsed = time.monotonic() - started
        got = tally(answers)
        print(f"\n{PROBES} probing sends in {elapsed:.2f} s: {dict(got)}")
        if not defended:  # the attack: who is online, who is registered, who is not
            assert got == {"sent": ONLINE, "offline": MEMBERS - ONLINE, "unknown_user": 170}
        else:
            assert got["sent"] + got["offline"] + got["unknown_user"] <= most_answered(elapsed)
            assert refused_kinds(answers) == {"online", "offline", "nobody"}
        for s in [*online, spy]:
            await s.close()


async def test_calls_cost_one_token_per_new_peer_and_are_never_refused() -> None:
    """The client's real pattern with the defaults: look the callee up, then many envelopes both
    ways. 50 calls between the same two people, 20 envelopes each way per call."""
    async with serve_signaling(server_config(**FAST, **DEFAULTS)) as srv:
        alice, _ = await log_in(url_of(srv), make_user("alice"))
        bob, _ = await log_in(url_of(srv), make_user("bob"))
        answers = []
        for _ in range(50):
            answers.append(await alice.lookup("bob"))
            for _ in range(20):
                answers.append(await alice.send("bob"))
                answers.append(await bob.send("alice"))
        assert tally(answers) == {"key": 50, "sent": 2000}
        await bob.close()
        # The caller still learns at once that a peer went offline (no 60 s of ringing).
        assert (await alice.send("bob"))["code"] == "offline"
        spent = [await alice.lookup(f"new{i:03d}") for i in range(Config().lookup_burst - 2)]
        assert tally(spent) == {"unknown_user": Config().lookup_burst - 2}  # allowance left
        await alice.close()
