"""The link's pure parts: the reconnection backoff, which errors are fatal, the config checks;
and renew (a change of network: log in again now) on fake sessions."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from voice.crypto.identity import Identity
from voice.errors import (
    InsecureServerUrl,
    LoginRefused,
    ServerCertificateRejected,
    ServerNameChanged,
    SessionReplaced,
    SignalingClosed,
    SignalingProtocolError,
    SignalingUnreachable,
)
from voice.phone import PhoneConfig
from voice.phone import link as link_module
from voice.phone.link import Backoff, SignalingLink, describe, is_fatal


def test_backoff_doubles_to_the_cap_with_full_jitter_and_resets() -> None:
    top = Backoff(0.5, 15.0, rand=lambda: 1.0)  # the ceilings themselves
    assert [top.next_delay() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    top.reset()
    assert top.next_delay() == 0.5  # after a successful login: short again
    half = Backoff(0.5, 15.0, rand=lambda: 0.5)
    assert [half.next_delay() for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert Backoff(0.5, 15.0, rand=lambda: 0.0).next_delay() == 0.0
    for _ in range(10_000):  # overflow-free however long the server stays away
        top.next_delay()
    assert top.ceiling() == 15.0


def test_backoff_delays_are_spread_over_the_whole_range() -> None:
    """Full jitter: phones that lost the same server do not come back in lockstep."""
    rng = random.Random(7)
    delays = []
    for _ in range(2_000):
        b = Backoff(0.5, 15.0, rand=rng.random)
        for _ in range(6):
            b.next_delay()
        delays.append(b.next_delay())  # ceiling 15 s now
    assert all(0.0 <= d < 15.0 for d in delays)
    assert min(delays) < 1.0 and max(delays) > 14.0
    assert 6.5 < sum(delays) / len(delays) < 8.5  # uniform: mean about 7.5 s
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_what_is_fatal() -> None:
    transient = [
        SignalingClosed("closed", code=1001),
        SignalingClosed("closed", code=1011),
        SignalingUnreachable("refused"),
        SignalingProtocolError("garbage from the server"),
        LoginRefused("busy", code="too_many_connections"),
        LoginRefused("slow down", code="rate_limited"),
        LoginRefused("later", code="registration_limited"),
    ]
    fatal = [
        SessionReplaced("logged in elsewhere", code="replaced"),
        ServerNameChanged("another deployment"),
        ServerCertificateRejected("does not verify"),
        InsecureServerUrl("ws:// to a remote host"),
        LoginRefused("bad signature", code="bad_signature"),
        LoginRefused("wrong server", code="wrong_server"),
        LoginRefused("taken", code="username_taken"),
        LoginRefused("closed", code="registration_closed"),
        RuntimeError("a bug"),
    ]
    assert [e for e in transient if is_fatal(e)] == []
    assert [e for e in fatal if not is_fatal(e)] == []
    assert describe(SignalingClosed("session closed", code=1011)) == (
        "the server stopped answering keepalive pings"
    )
    assert "shutting down" in describe(SignalingClosed("session closed", code=1001))
    assert describe(SignalingClosed("x", code="offline")) == "x (offline)"


def test_reconnect_settings_are_checked() -> None:
    base = {"server_url": "ws://x", "user": "alice", "identity": Identity.generate()}
    config = PhoneConfig(**base, contacts=None)  # type: ignore[arg-type]
    assert config.reconnect and config.keepalive_interval + config.keepalive_timeout <= 15.0
    for bad in (
        {"keepalive_interval": 0},
        {"keepalive_timeout": -1},
        {"reconnect_delay": 0},
        {"reconnect_delay": 2.0, "reconnect_max_delay": 1.0},
    ):
        with pytest.raises(ValueError):
            PhoneConfig(**base, contacts=None, **bad)  # type: ignore[arg-type]


# ---- renew: this machine's addresses changed, log in again now ---------------------------------


class FakeClient:
    """A signaling session as the link sees it."""

    server = "voice.example"
    server_id = "deployment-1"

    def __init__(self, address: str = "192.0.2.10", *, answers: bool = True) -> None:
        self.aborted = False
        self.address = address  # what the session's socket is bound to
        self.answers = answers  # whether the server answers a ping
        self.probes = 0

    def abort(self) -> None:
        self.aborted = True

    def local_address(self) -> str | None:
        return self.address

    async def probe(self, within: float) -> bool:
        self.probes += 1
        return self.answers

    async def close(self) -> None:
        self.aborted = True


Login = FakeClient | BaseException | asyncio.Event  # an Event: the login hangs until cancelled


def make_link(
    monkeypatch: pytest.MonkeyPatch, logins: list[Login], *, wait: float = 30.0, **changes: Any
) -> tuple[SignalingLink, FakeClient, list[str]]:
    """A link on a fake first session; each login takes the next of ``logins``; every backoff
    wait is ``wait`` s (a renewed link must not sit through it). Returns what became of each
    login: "ok", "failed", "abandoned"."""
    fates: list[str] = []

    async def fake_login(*_: object) -> FakeClient:
        item = logins.pop(0)
        if isinstance(item, asyncio.Event):
            item.set()  # tell the test the login is in flight
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                fates.append("abandoned")
                raise
        if isinstance(item, BaseException):
            fates.append("failed")
            raise item
        assert isinstance(item, FakeClient)
        fates.append("ok")
        return item

    monkeypatch.setattr(link_module, "login", fake_login)
    base = {"server_url": "wss://voice.example", "user": "alice"}
    config = PhoneConfig(**base, identity=Identity.generate(), contacts=None, **changes)  # type: ignore[arg-type]
    first = FakeClient()
    link = SignalingLink(config, first)  # type: ignore[arg-type]
    link.backoff = Backoff(wait, wait, rand=lambda: 1.0)
    return link, first, fates


LOST = SignalingClosed("the signaling session ended", code=None)


async def test_renew_cuts_the_session_and_logs_in_again_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    second = FakeClient()
    link, first, fates = make_link(monkeypatch, [second])
    link.backoff.attempt = 5  # a server that failed a lot lately: it would wait
    link.renew("the network changed")
    assert first.aborted and not link.online  # cut at once, no closing handshake
    assert link.backoff.attempt == 0  # a move says nothing about the server
    link.went_offline(LOST)  # what the phone's read loop does when the session ends
    assert link.changes[-1].reason == "the network changed"  # not "the session ended"
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(link.reconnect(), 5)
    assert loop.time() - started < 1.0  # no backoff wait
    assert link.online and link.client is second and link.reconnects == 1 and fates == ["ok"]
    assert [c.state for c in link.changes] == ["offline", "online"]
    # the next loss that is not a move waits its backoff again
    link.went_offline(LOST)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(link.reconnect(), 0.3)


async def test_renew_ends_a_backoff_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    second = FakeClient()
    link, first, fates = make_link(monkeypatch, [second])
    link.went_offline(SignalingClosed("closed", code=1006))  # lost before the move
    reconnecting = asyncio.create_task(link.reconnect())
    await asyncio.sleep(0.2)
    assert not reconnecting.done() and fates == []  # sitting out its 30 s
    link.renew("the network changed")
    await asyncio.wait_for(reconnecting, 5)
    assert link.client is second and fates == ["ok"]
    assert not first.aborted  # nothing left to cut
    assert link.changes[0].reason == "the connection was lost"


async def test_renew_abandons_a_login_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight = asyncio.Event()
    second = FakeClient()
    link, _, fates = make_link(
        monkeypatch, [SignalingUnreachable("network is unreachable"), in_flight, second], wait=0.01
    )
    link.renew("the network changed")  # the first move: the old address went away
    link.went_offline(LOST)
    reconnecting = asyncio.create_task(link.reconnect())
    await asyncio.wait_for(in_flight.wait(), 5)  # failed once, then a login hangs on the way
    link.renew("the network changed")  # the new address came up
    await asyncio.wait_for(reconnecting, 5)
    assert fates == ["failed", "abandoned", "ok"] and link.client is second and link.online


async def test_renew_leaves_a_link_that_will_not_reconnect_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link, first, _ = make_link(monkeypatch, [], reconnect=False)
    link.renew("the network changed")  # cutting it would end the phone: it may still work
    assert link.online and not first.aborted
    link, first, _ = make_link(monkeypatch, [])
    link.end(None)  # closed
    link.renew("the network changed")
    assert not first.aborted


# ---- renew_if_stranded: only a session that the change stranded is cut ------------------------


async def test_a_session_whose_address_is_gone_is_renewed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link, first, _ = make_link(monkeypatch, [FakeClient("198.51.100.7")])
    await link.renew_if_stranded({"198.51.100.7"}, "the network changed")  # Wi-Fi -> LTE
    assert first.aborted and not link.online
    assert first.probes == 0  # no need to ask: its address is gone


async def test_a_session_that_still_answers_survives_an_added_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link, first, _ = make_link(monkeypatch, [])
    await link.renew_if_stranded({"192.0.2.10", "10.8.0.2"}, "the network changed")  # a VPN
    assert first.probes == 1 and not first.aborted and link.online  # calls in setup go on


async def test_a_session_that_no_longer_answers_is_renewed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link, _, _ = make_link(monkeypatch, [])
    first = FakeClient(answers=False)  # its address is still there, its route is not
    link.client = first  # type: ignore[assignment]
    await link.renew_if_stranded({"192.0.2.10", "10.8.0.2"}, "the network changed")
    assert first.probes == 1 and first.aborted and not link.online
