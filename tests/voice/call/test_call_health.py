"""The media watch, pure: which event a call gets from its media counters, and when."""

from __future__ import annotations

from voice.call import events as ev
from voice.call.health import MediaWatch


def check(
    w: MediaWatch, now: float, *, rx: int, ice: bool = True, connected: bool = True
) -> object:
    return w.check(now, ice_connected=ice, failed=False, packets_received=rx, connected=connected)


def test_a_peer_silent_for_longer_than_the_media_timeout_has_vanished() -> None:
    w = MediaWatch(media_timeout=2.0, every=0.5)
    w.media_started(0.0)
    assert check(w, 0.5, rx=1) is None
    assert check(w, 1.0, rx=5) is None  # packets keep coming
    assert check(w, 3.0, rx=5) is None  # silent for exactly 2.0 s: not yet
    assert check(w, 3.1, rx=5) == ev.PeerVanished()


def test_silence_before_connect_is_not_a_vanished_peer() -> None:
    w = MediaWatch(media_timeout=1.0)
    assert check(w, 10.0, rx=0, connected=False) is None


def test_losing_ice_after_it_was_up_fails_and_a_media_error_fails() -> None:
    w = MediaWatch(media_timeout=10.0)
    assert check(w, 0.0, rx=0, ice=False) is None  # ICE was never up: still connecting
    w.ice_up = True
    assert check(w, 1.0, rx=0, ice=False) == ev.IceFailed()
    failed = w.check(2.0, ice_connected=True, failed=True, packets_received=0, connected=True)
    assert failed == ev.MediaFailed()


def test_checks_are_due_only_every_interval() -> None:
    w = MediaWatch(media_timeout=10.0, every=0.5)
    assert w.due(0.0)
    check(w, 0.0, rx=0)
    assert not w.due(0.4) and w.due(0.5)
