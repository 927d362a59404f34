"""The phone's ICE servers: URIs from the server, cached credentials, and the relay policy.

``auto`` relays every peer but a VERIFIED contact: shown with Phone.make_media against a
real coturn (the phone's signaling client is a stub that hands out coturn credentials).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from signaling.messages import TurnCredentials
from signaling.turn import turn_credentials, turn_label
from tests.support.coturn import Coturn, running_coturn
from tests.support.phoneconfig import phone_config
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.errors import RateLimited, TurnUnavailable
from voice.media.ice import IceServers, StunServer, TurnServer
from voice.phone.config import PhoneConfig
from voice.phone.phone import Phone
from voice.phone.turn import (
    NO_RELAY_WARNING,
    IceServerCache,
    parse_ice_uri,
    parse_ice_uris,
    relay_only_for,
    server_on_loopback,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("stun:stun.example.org", StunServer("stun.example.org", 3478)),
        ("stun:203.0.113.1:19302", StunServer("203.0.113.1", 19302)),
        ("turn:turn.test", TurnServer("turn.test", 3478, "u", "p", "udp")),
        ("turn:[::1]", TurnServer("::1", 3478, "u", "p", "udp")),
        ("turn:127.0.0.1:3479?transport=tcp", TurnServer("127.0.0.1", 3479, "u", "p", "tcp")),
        ("turn:127.0.0.1?transport=udp", TurnServer("127.0.0.1", 3478, "u", "p", "udp")),
        ("turns:turn.test", TurnServer("turn.test", 5349, "u", "p", "tcp", tls=True)),
        ("turns:turn.test:443?transport=tcp", TurnServer("turn.test", 443, "u", "p", "tcp", True)),
    ],
)
def test_every_uri_form(uri: str, expected: StunServer | TurnServer) -> None:
    assert parse_ice_uri(uri, "u", "p") == expected


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "nonsense",
        "http://turn.test",
        "stuns:stun.test",  # STUN over TLS: not supported
        "turn:",
        "turn:turn.test:0",
        "turn:turn.test:70000",
        "turn:turn.test?transport=sctp",
        "turns:turn.test?transport=udp",  # DTLS
        "stun:stun.test?transport=udp",
        "turn:[127.0.0.1]",
        "turn:user@turn.test",
        "turn:turn.test:3478?transport=udp&x=1",
        "turn:bad_host!",
    ],
)
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_ice_uri(uri, "u", "p")


def test_unusable_uris_are_skipped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    uris = ["stun:a.test", "xmpp:who", "turn:b.test", "turns:b.test", "turn:b.test", "turn:"]
    with caplog.at_level(logging.WARNING, logger="voice.phone"):
        servers = parse_ice_uris(uris, "1:alice", "secret-password")
    assert servers.stun == (StunServer("a.test"),)
    assert [t.uri for t in servers.turn] == ["turn:b.test:3478?transport=udp", "turns:b.test:5349"]
    assert caplog.text.count("ignoring ICE server URI") == 2
    assert "secret-password" not in caplog.text + repr(servers)


def test_server_on_loopback() -> None:
    assert server_on_loopback("ws://127.0.0.1:8765")
    assert server_on_loopback("wss://localhost:8765")
    assert server_on_loopback("ws://[::1]:1")
    assert not server_on_loopback("wss://voice.example.org")
    assert not server_on_loopback("wss://192.0.2.1:443")


_TURN = IceServers(turn=(TurnServer("t.test", 3478, "u", "p"),))
_STUN_ONLY = IceServers(stun=(StunServer("s.test"),))


def test_relay_policy(caplog: pytest.LogCaptureFixture) -> None:
    assert relay_only_for("always", _TURN, verified_peer=True)
    with pytest.raises(TurnUnavailable, match="no TURN relay"):
        relay_only_for("always", _STUN_ONLY, verified_peer=False)
    assert not relay_only_for("never", _TURN, verified_peer=False)
    assert relay_only_for("auto", _TURN, verified_peer=False)
    assert not relay_only_for("auto", _TURN, verified_peer=True)
    with caplog.at_level(logging.WARNING, logger="voice.phone"):
        assert not relay_only_for("auto", _STUN_ONLY, verified_peer=True)
        assert NO_RELAY_WARNING not in caplog.text  # nothing to hide from a verified contact
        assert not relay_only_for("auto", _STUN_ONLY, verified_peer=False)
    assert caplog.text.count(NO_RELAY_WARNING) == 1


class _Server:
    """The signaling client's turn_credentials, as a coturn REST-API issuer."""

    def __init__(self, uris: tuple[str, ...], secret: bytes = b"s", ttl: int = 600) -> None:
        self.uris, self.secret, self.ttl = uris, secret, ttl
        self.now = 1_000_000.0
        self.calls = 0
        self.refuse: Exception | None = None

    async def turn_credentials(self, *, reply_timeout: float = 10.0) -> TurnCredentials:
        self.calls += 1
        if self.refuse is not None:
            raise self.refuse
        username, password = turn_credentials(self.secret, "alice", self.ttl, self.now)
        return TurnCredentials("1", username, password, self.ttl, self.uris)


def _config(**changes: Any) -> PhoneConfig:
    base: dict[str, Any] = {
        "server_url": "ws://127.0.0.1:1",
        "user": "alice",
        "identity": Identity.generate(),
        "contacts": ContactBook(),
    }
    return phone_config(**(base | changes))


async def test_credentials_are_reused_until_half_their_lifetime() -> None:
    server = _Server(("stun:s.test", "turn:t.test"))
    cache = IceServerCache(clock=lambda: server.now)
    cfg = _config()
    first = await cache.get(server, cfg)  # type: ignore[arg-type]
    assert first.turn[0].username == f"{int(server.now) + 600}:{turn_label(server.secret, 'alice')}"
    server.now += 299
    assert await cache.get(server, cfg) is first  # type: ignore[arg-type]
    assert server.calls == 1
    server.now += 2  # past half the TTL: ask again
    second = await cache.get(server, cfg)  # type: ignore[arg-type]
    assert server.calls == 2 and second.turn[0].username != first.turn[0].username
    # refused (the allowance is spent): the unexpired credentials still serve
    server.now += 301
    server.refuse = RateLimited("slow down", code="rate_limited")
    assert await cache.get(server, cfg) is second  # type: ignore[arg-type]
    server.now += 400  # expired now: nothing left to offer
    assert await cache.get(server, cfg) == IceServers()  # type: ignore[arg-type]
    # a server with no TURN at all is not asked again for a while
    server.refuse = TurnUnavailable("none", code="turn_unavailable")
    calls = server.calls
    assert await cache.get(server, cfg) == IceServers()  # type: ignore[arg-type]
    assert await cache.get(server, cfg) == IceServers()  # type: ignore[arg-type]
    assert server.calls == calls + 1


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    with running_coturn(tmp_path_factory.mktemp("coturn-phone")) as server:
        yield server


async def _media_candidates(cfg: PhoneConfig, server: _Server, peer: Identity) -> list[str]:
    """What Phone.make_media gathers for a call to ``bob`` (who holds ``peer``)."""
    fake_phone = SimpleNamespace(
        config=cfg,
        _ice_servers=IceServerCache(),
        _client=server,
        _audio=lambda call: (ToneSource(), MemorySink()),
    )
    call = SimpleNamespace(peer="bob", peer_key=peer.public_key)
    session = await Phone.make_media(fake_phone, call, controlling=True)  # type: ignore[arg-type]
    try:
        return list(session.local_description()["ice"]["candidates"])
    finally:
        await session.close()


async def test_auto_relays_an_unverified_peer_and_not_a_verified_one(
    coturn: Coturn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bob = Identity.generate()
    contacts = ContactBook(tmp_path / "contacts.json")
    contacts.check("bob", bob.public_key)  # pinned on first use: UNVERIFIED
    cfg = _config(contacts=contacts, host_addresses=("127.0.0.1",))
    server = _Server(coturn.uris(), secret=coturn.secret)
    server.now = time.time()
    candidates = await _media_candidates(cfg, server, bob)
    assert candidates and all(" typ relay" in c for c in candidates)
    assert " raddr 0.0.0.0 rport 9" in candidates[0]  # not even the related address leaks

    contacts.trust("bob", str(bob.fingerprint))
    candidates = await _media_candidates(cfg, server, bob)
    kinds = sorted(c.split(" typ ")[1].split()[0] for c in candidates)
    assert kinds == ["host", "relay"]  # direct first, the relay still offered as a fallback

    never = _config(contacts=contacts, host_addresses=("127.0.0.1",), relay="never")
    candidates = await _media_candidates(never, server, Identity.generate())  # a stranger
    assert all(" typ host" in c for c in candidates)

    # no TURN offered: auto goes direct for the stranger, with one warning
    server.refuse = TurnUnavailable("none", code="turn_unavailable")
    stranger = Identity.generate()
    with caplog.at_level(logging.WARNING, logger="voice.phone"):
        candidates = await _media_candidates(cfg, server, stranger)
    assert all(" typ host" in c for c in candidates)
    assert caplog.text.count(NO_RELAY_WARNING) == 1
    always = _config(contacts=contacts, host_addresses=("127.0.0.1",), relay="always")
    with pytest.raises(TurnUnavailable):
        await _media_candidates(always, server, bob)


def test_default_host_addresses_follow_the_server() -> None:
    from voice.media.ice import interface_addresses

    assert "127.0.0.1" in interface_addresses(include_loopback=server_on_loopback("ws://[::1]:1"))
    assert "127.0.0.1" not in interface_addresses(
        include_loopback=server_on_loopback("wss://voice.example.org")
    )
