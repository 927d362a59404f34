"""Keepalive for all of an instance's connections in one sweep, not a task per connection.

Any bytes from a peer prove it alive, and our clients ping every 5 s on their own
(:data:`voice.net.client.KEEPALIVE_INTERVAL`), so the server pings only a connection that
has been silent for ``interval`` and drops one silent for ``interval + timeout`` (close code
1011, as websockets' own keepalive does). A read costs one attribute store; one timer per
instance looks at every connection each tick. websockets' keepalive instead wakes a task for
every connection every ``interval`` to send a ping and again for its pong, on top of the
pongs it sends for the clients' pings: with 2,000 clients at 5 s that cost a lone instance
0.1 of a core, as much as routing 500 envelopes/s (``bench/signaling_load.py``).

Bytes prove that a peer sends, not that it reads. A peer that stopped reading blocks our
writes (the transport pauses writing); one blocked for ``interval + timeout`` without a
moment's progress is dropped too. websockets' keepalive meant to catch it by a pong that
never came, but its ping waited for the blocked writes to drain, for ever.

A silent connection is pinged ``interval`` into its silence (up to a tick later) and dropped
between ``interval + timeout`` and a tick more after the last bytes it sent, or after its
writes blocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")

log = logging.getLogger("signaling.keepalive")

MAX_TICK = 1.0  # s between two sweeps at most (a quarter of the interval if that is less)


@dataclass(slots=True)
class Liveness:
    """What the sweep knows of one connection: ``heard`` is set by every read (and cleared
    by the next tick, which moves ``since`` to its own time); ``pinged``: in this silence;
    ``blocked_since``: when our writes to it last blocked, None while they flow."""

    since: float
    heard: bool = False
    pinged: bool = False
    blocked_since: float | None = None


def sweep(
    connections: dict[C, Liveness], now: float, interval: float, timeout: float
) -> tuple[list[C], list[C]]:
    """One tick: the connections to ping and those to drop (each dropped one only once)."""
    ping: list[C] = []
    drop: list[C] = []
    limit = interval + timeout
    for conn, live in connections.items():
        if live.blocked_since is not None and now - live.blocked_since >= limit:
            drop.append(conn)  # it sends, maybe, but it does not read
        elif live.heard:
            live.heard = live.pinged = False
            live.since = now
        elif now - live.since >= limit:
            drop.append(conn)
        elif now - live.since >= interval and not live.pinged:
            live.pinged = True
            ping.append(conn)
    for conn in drop:
        del connections[conn]  # the connection closes on its own time; not judged again
    return ping, drop


class Keepalive(Generic[C]):
    """Ticks :func:`sweep` on the running loop and hands its verdicts to ``ping`` and
    ``drop``. Register a connection with :meth:`watch` once it is open; it must set the
    :class:`Liveness`'s ``heard`` on every read and ``blocked_since`` when its writes block
    (None when they resume), and call :meth:`forget` when it closes."""

    def __init__(
        self,
        interval: float,
        timeout: float,
        ping: Callable[[C], None],
        drop: Callable[[C], None],
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self.tick = min(MAX_TICK, interval / 4)
        self._ping = ping
        self._drop = drop
        self._connections: dict[C, Liveness] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._connections.clear()

    def watch(self, conn: C, live: Liveness) -> None:
        live.since = asyncio.get_running_loop().time()
        live.heard = live.pinged = False
        self._connections[conn] = live

    def forget(self, conn: C) -> None:
        self._connections.pop(conn, None)

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.tick, self._run)

    def _run(self) -> None:
        self._schedule()
        now = asyncio.get_running_loop().time()
        ping, drop = sweep(self._connections, now, self.interval, self.timeout)
        for act, conns in ((self._ping, ping), (self._drop, drop)):
            for conn in conns:
                try:  # one connection's failure is not every other's
                    act(conn)
                except Exception:
                    log.exception("keepalive_failed")
