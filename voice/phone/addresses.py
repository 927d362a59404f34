"""Has this machine's set of IP addresses changed? (A laptop moved to another network.)

One watch per phone, polled about once a second by :func:`watch_addresses`. A new or vanished
address means the network under us changed before any peer or server noticed, so the phone acts
at once instead of waiting for timeouts: its signaling session logs in again now if its socket
was bound to an address that is gone, or if the server does not answer a ping within 3 s
(keepalive alone takes up to ~14 s to notice), and each connected call restarts ICE at its
first silent check within a second of the change (voice.call.health). The
set is the one ICE gathers host candidates on (voice.media.iceservers.interface_addresses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from voice.media.iceservers import interface_addresses

__all__ = ["POLL_EVERY", "AddressWatch", "host_addresses", "watch_addresses"]

log = logging.getLogger("voice.phone")
POLL_EVERY = 1.0  # seconds: listing interfaces is a system call per interface


_listed: tuple[float, frozenset[str]] | None = None  # (when, what): shared by every phone


def host_addresses(*, max_age: float = POLL_EVERY / 2) -> frozenset[str]:
    """The machine's usable IPv4 and IPv6 addresses (no loopback, no link-local).

    One listing serves every phone of the process for ``max_age`` seconds: a process with many
    phones (a test, the capacity benchmark) otherwise lists the interfaces once per phone per
    poll, which at 60 phones was 3 % of the event loop."""
    global _listed
    now = time.monotonic()
    if _listed is None or not 0 <= now - _listed[0] < max_age:
        _listed = (now, frozenset(interface_addresses()))
    return _listed[1]


class AddressWatch:
    """Compares each listing of the addresses with the one before (pure, given the lister)."""

    def __init__(self, addresses: Callable[[], Collection[str]] = host_addresses) -> None:
        self._addresses = addresses
        self._known: frozenset[str] | None = None

    def changed(self) -> bool:
        """True if the address set differs from the one seen at the last call (never on the
        first call: that one only learns the set)."""
        current = frozenset(self._addresses())
        known, self._known = self._known, current
        return known is not None and current != known

    @property
    def current(self) -> frozenset[str]:
        """The addresses seen at the last call (empty before the first)."""
        return self._known or frozenset()


async def watch_addresses(
    watch: AddressWatch, on_change: Callable[[], None], *, every: float = POLL_EVERY
) -> None:
    """Forever: look every ``every`` seconds, from now; ``on_change()`` after each change.
    Neither a failed listing nor a failing ``on_change`` stops the watch."""
    while True:
        try:
            if watch.changed():
                log.info("this machine's addresses changed")
                on_change()
        except Exception:
            log.exception("watching the machine's addresses failed")
        await asyncio.sleep(every)
