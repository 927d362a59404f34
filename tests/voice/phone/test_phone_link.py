"""The link's pure parts: the reconnection backoff, which errors are fatal, the config checks."""

from __future__ import annotations

import random

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
from voice.phone.link import Backoff, describe, is_fatal


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
