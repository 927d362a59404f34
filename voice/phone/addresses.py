"""Has this machine's set of IP addresses changed? (A laptop moved to another network.)

Polled by a connected call about once a second: a new or vanished address means the media
path may be gone before the peer notices, so the call restarts ICE at once instead of waiting
for the audio to stop (voice.call.health). The set is the one ICE gathers host candidates on
(voice.media.iceservers.interface_addresses).
"""

from __future__ import annotations

from voice.media.iceservers import interface_addresses

__all__ = ["POLL_EVERY", "AddressWatch", "host_addresses"]

POLL_EVERY = 1.0  # seconds


def host_addresses() -> frozenset[str]:
    """The machine's usable IPv4 and IPv6 addresses (no loopback, no link-local)."""
    return frozenset(interface_addresses())


class AddressWatch:
    def __init__(self, *, every: float = POLL_EVERY) -> None:
        self._every = every
        self._next = 0.0
        self._known: frozenset[str] | None = None

    def changed(self, now: float) -> bool:
        """True once after the address set differs from the last one seen (at most every
        ``every`` seconds: listing interfaces is a system call per interface)."""
        if now < self._next:
            return False
        self._next = now + self._every
        current = host_addresses()
        known, self._known = self._known, current
        return known is not None and current != known
