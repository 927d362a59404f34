"""Is the call's media path alive? A pure watch over the media counters.

The shell samples its media session and asks :meth:`MediaWatch.check` every tick; the watch
looks every ``every`` seconds. It counts only *authenticated* RTP packets from the peer (SRTP
that passed its tag check): STUN consent checks, or packets an attacker injects, prove nothing.

    connected, first authenticated packet      -> MediaFlowing (the user is told "connected")
    media tasks reported an error              -> MediaFailed
    flowing, then silent for ``interrupt_after`` -> notice "reconnecting" (no state change)
    silent for ``restart_after``, then every ``restart_every`` while silent, or at once when
      the local addresses changed              -> restart ICE (the shell's job)
    audio back                                 -> notice "reconnected"
    silent for ``media_timeout`` (the reconnect window) -> MediaLost

Silence in the audio is not silence here: a muted or held call keeps sending packets of digital
silence at the full rate (voice.call.hold), so it never looks interrupted, however long the hold.

A silence is not a failure at once: the peer may be behind a network that blinks, or moving
to another address. The call ends only if the audio does not come back within the window.

A change of our addresses restarts ICE only once the audio pauses (a path the change did not
touch needs no restart), but it is kept for ``interrupt_after``: the change is noticed up to a
poll late, so the check right after it may still count packets that arrived before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from voice.call import events as ev

__all__ = [
    "INTERRUPT_AFTER",
    "RESTART_AFTER",
    "RESTART_EVERY",
    "WATCH_EVERY",
    "MediaWatch",
    "WatchResult",
]

WATCH_EVERY = 0.25  # seconds between media health checks
INTERRUPT_AFTER = 1.0  # no authenticated audio this long: tell the user "reconnecting"
RESTART_AFTER = 2.5  # ... this long: restart ICE (the old path may still come back)
RESTART_EVERY = 6.0  # while still silent, try again this often

Notice = Literal["reconnecting", "reconnected"]


@dataclass(frozen=True)
class WatchResult:
    event: ev.LocalEvent | None = None
    notice: Notice | None = None
    restart: bool = False


class MediaWatch:
    def __init__(
        self,
        media_timeout: float,
        *,
        every: float = WATCH_EVERY,
        interrupt_after: float = INTERRUPT_AFTER,
        restart_after: float = RESTART_AFTER,
        restart_every: float = RESTART_EVERY,
    ) -> None:
        self.media_timeout = media_timeout
        self.every = every
        self.interrupt_after = interrupt_after
        self.restart_after = restart_after
        self.restart_every = restart_every
        self.flowing = False
        self.interrupted = False
        self._rx = 0
        self._rx_changed_at = 0.0
        self._last_restart: float | None = None
        self._moved_at: float | None = None  # our addresses changed: restart at the pause
        self._next = 0.0
        self._failed_told = False

    def due(self, now: float) -> bool:
        """Whether a check is due (the shell samples its counters only then)."""
        return now >= self._next

    def media_started(self, now: float) -> None:
        """Media runs from ``now``."""
        self._rx_changed_at = now

    def check(
        self,
        now: float,
        *,
        rtp_received: int,
        failed: bool,
        connected: bool,
        addresses_changed: bool = False,
    ) -> WatchResult:
        """One look at the counters (``rtp_received``: authenticated RTP packets so far)."""
        self._next = now + self.every
        if failed and not self._failed_told:
            self._failed_told = True
            return WatchResult(ev.MediaFailed())
        if not connected:
            return WatchResult()
        if addresses_changed:
            self._moved_at = now
        if rtp_received != self._rx:
            self._rx, self._rx_changed_at = rtp_received, now
            if self._moved_at is not None and now - self._moved_at >= self.interrupt_after:
                self._moved_at = None  # the audio outlived the change: its path was not hit
            if not self.flowing:
                self.flowing = True
                return WatchResult(ev.MediaFlowing())
            if self.interrupted:
                self.interrupted = False
                self._last_restart = None
                return WatchResult(notice="reconnected")
            return WatchResult()
        if not self.flowing:
            return WatchResult()  # the machine's connect deadline covers a path never found
        silent = now - self._rx_changed_at
        if silent > self.media_timeout:
            return WatchResult(ev.MediaLost(silent))
        notice: Notice | None = None
        if silent >= self.interrupt_after and not self.interrupted:
            self.interrupted = True
            notice = "reconnecting"
        return WatchResult(notice=notice, restart=self._restart_due(now, silent))

    def _restart_due(self, now: float, silent: float) -> bool:
        due = self._moved_at is not None or (
            silent >= self.restart_after
            and (self._last_restart is None or now - self._last_restart >= self.restart_every)
        )
        if due:
            self._last_restart, self._moved_at = now, None
        return due
