"""Is the call's media path alive? A pure watch over the media counters.

The shell samples its media session and asks :meth:`MediaWatch.check` every tick; the watch
looks every ``every`` seconds and answers with the event the call machine should get:
IceFailed (ICE was up and is lost), MediaFailed (the media tasks reported an error) or
PeerVanished (connected, but no packet from the peer for ``media_timeout`` seconds).
"""

from __future__ import annotations

from voice.call import events as ev

__all__ = ["WATCH_EVERY", "MediaWatch"]

WATCH_EVERY = 0.5  # seconds between media health checks


class MediaWatch:
    def __init__(self, media_timeout: float, *, every: float = WATCH_EVERY) -> None:
        self.media_timeout = media_timeout
        self.every = every
        self.ice_up = False  # set once ICE connected: from then on losing it fails the call
        self._rx_packets = -1
        self._rx_changed_at = 0.0
        self._next = 0.0

    def due(self, now: float) -> bool:
        """Whether a check is due (the shell samples its counters only then)."""
        return now >= self._next

    def media_started(self, now: float) -> None:
        """Media runs from ``now``: the peer's silence is counted from here."""
        self._rx_changed_at = now

    def check(
        self,
        now: float,
        *,
        ice_connected: bool,
        failed: bool,
        packets_received: int,
        connected: bool,
    ) -> ev.IceFailed | ev.MediaFailed | ev.PeerVanished | None:
        self._next = now + self.every
        if self.ice_up and not ice_connected:
            return ev.IceFailed()
        if failed:
            return ev.MediaFailed()
        if connected:
            if packets_received != self._rx_packets:
                self._rx_packets, self._rx_changed_at = packets_received, now
            elif now - self._rx_changed_at > self.media_timeout:
                return ev.PeerVanished()
        return None
