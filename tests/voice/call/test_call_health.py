"""The media watch, pure: which event a call gets from its media counters, and when."""

from __future__ import annotations

from voice.call import events as ev
from voice.call.health import MediaWatch, WatchResult


def check(
    w: MediaWatch, now: float, *, rx: int, connected: bool = True, moved: bool = False
) -> WatchResult:
    return w.check(now, rtp_received=rx, failed=False, connected=connected, addresses_changed=moved)


def flowing(media_timeout: float = 30.0) -> MediaWatch:
    w = MediaWatch(media_timeout=media_timeout, every=0.25)
    w.media_started(0.0)
    assert check(w, 0.0, rx=0) == WatchResult()  # connected, nothing authenticated yet
    assert check(w, 0.1, rx=1).event == ev.MediaFlowing()
    return w


def test_connected_means_an_authenticated_packet_arrived_and_only_once() -> None:
    w = MediaWatch(media_timeout=30.0)
    assert check(w, 5.0, rx=3, connected=False) == WatchResult()  # not accepted: not counted
    assert check(w, 6.0, rx=0) == WatchResult()
    assert check(w, 7.0, rx=1).event == ev.MediaFlowing()
    assert check(w, 7.5, rx=9) == WatchResult()


def test_a_pause_is_reconnecting_then_reconnected_and_the_window_ends_it() -> None:
    w = flowing(media_timeout=30.0)
    assert check(w, 1.0, rx=1) == WatchResult()  # 0.9 s of silence: nothing yet
    assert check(w, 1.2, rx=1).notice == "reconnecting"
    assert check(w, 1.5, rx=1) == WatchResult()  # said once
    assert check(w, 2.0, rx=2).notice == "reconnected"
    assert check(w, 3.1, rx=2).notice == "reconnecting"
    assert check(w, 32.0, rx=2).event is None  # 30.0 s: still inside the window
    lost = check(w, 32.1, rx=2).event
    assert isinstance(lost, ev.MediaLost) and lost.seconds > 30.0


def test_restarts_come_after_a_short_silence_then_spaced_and_at_once_on_a_new_address() -> None:
    w = flowing()
    assert not check(w, 2.5, rx=1).restart
    assert check(w, 2.7, rx=1).restart  # 2.6 s silent
    assert not check(w, 5.0, rx=1).restart
    assert check(w, 8.8, rx=1).restart  # 6 s after the last one
    assert check(w, 9.0, rx=1, moved=True).restart  # the address changed: do not wait
    assert check(w, 9.5, rx=5).notice == "reconnected"
    assert check(w, 10.0, rx=6, moved=True).restart is False  # audio flows: nothing to fix


def test_a_new_address_noticed_late_still_restarts_at_the_pause() -> None:
    """The change is seen up to a poll after it happened: the check right after may still
    count packets from before it. The restart waits for the pause, not for 2.5 s of it."""
    w = flowing()
    assert not check(w, 1.0, rx=40, moved=True).restart  # packets since the last check
    assert check(w, 1.25, rx=40).restart  # the first silent check: at once
    assert not check(w, 1.5, rx=40).restart  # once
    w = flowing()
    assert not check(w, 1.0, rx=40, moved=True).restart
    assert not check(w, 2.0, rx=90).restart  # the audio outlived the change by 1 s ...
    assert not check(w, 2.25, rx=90).restart  # ... so a pause after it is an ordinary one
    assert check(w, 4.75, rx=90).restart  # 2.5 s silent


def test_silence_before_the_first_packet_is_left_to_the_connect_deadline() -> None:
    w = MediaWatch(media_timeout=1.0)
    w.media_started(0.0)
    assert check(w, 10.0, rx=0) == WatchResult()


def test_a_media_error_is_reported_once() -> None:
    w = MediaWatch(media_timeout=10.0)
    failed = w.check(2.0, rtp_received=0, failed=True, connected=True)
    assert failed.event == ev.MediaFailed()
    assert w.check(2.5, rtp_received=0, failed=True, connected=True) == WatchResult()


def test_checks_are_due_only_every_interval() -> None:
    w = MediaWatch(media_timeout=10.0, every=0.5)
    assert w.due(0.0)
    check(w, 0.0, rx=0)
    assert not w.due(0.4) and w.due(0.5)
