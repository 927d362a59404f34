"""Keepalive for all of an instance's connections in one sweep, not a task per connection.

Any bytes from a peer prove it alive, and our clients ping every 5 s on their own
(:data:`voice.net.client.KEEPALIVE_INTERVAL`), so the server pings only a connection that
has been silent for ``interval`` and drops one silent for ``interval + timeout`` (close code
1011, as websockets' own keepalive does). A read costs one attribute store; one timer per
instance looks at every connection each tick. websockets' keepalive instead wakes a task for
every connection every ``interval`` to send a ping and again for its pong, on top of the
pongs it sends for the clients' pings: with 2,000 clients at 5 s that cost a lone instance
0.1 of a core, as much as routing 500 envelopes/s (``bench/signaling_load.py``).

A connection is dropped between ``interval + timeout`` and one tick more after the last
bytes it sent; it is pinged once per silence, ``interval`` (up to a tick more) into it.

Bytes prove that a peer sends, not that it reads. A peer whose queue of frames is filling
(:meth:`Keepalive.must_read`) is pinged at once, and from then on only the pong counts: the
peer sees the ping only after reading everything queued before it. No pong within
``timeout``: dropped, as a reader that stopped is under websockets' own keepalive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")

MAX_TICK = 1.0  # s between two sweeps at most (a quarter of the interval if that is less)


@dataclass(slots=True)
class Liveness:
    """What the sweep knows of one connection: ``heard`` is set by every read (and cleared
    by the next tick, which moves ``since`` to its own time); ``pinged``: in this silence;
    ``must_read``: only a pong counts (:meth:`Keepalive.must_read`), which clears it."""

    since: float
    heard: bool = False
    pinged: bool = False
    must_read: bool = False

    def ponged(self) -> None:
        """The pong to one of our pings: the peer read all we sent before it."""
        self.must_read = False
        self.heard = True


def sweep(
    connections: dict[C, Liveness], now: float, interval: float, timeout: float
) -> tuple[list[C], list[C]]:
    """One tick: the connections to ping and those to drop (each dropped one only once)."""
    ping: list[C] = []
    drop: list[C] = []
    for conn, live in connections.items():
        if live.heard and not live.must_read:
            live.heard = live.pinged = False
            live.since = now
            continue
        live.heard = False
        silent = now - live.since
        if silent >= interval + timeout:
            drop.append(conn)
        elif silent >= interval and not live.pinged:
            live.pinged = True
            ping.append(conn)
    for conn in drop:
        del connections[conn]  # the connection closes on its own time; not judged again
    return ping, drop


class Keepalive(Generic[C]):
    """Ticks :func:`sweep` on the running loop and hands its verdicts to ``ping`` and
    ``drop``. Register a connection with :meth:`watch` once it is open; it must set the
    returned :class:`Liveness`'s ``heard`` on every read, and call :meth:`forget` when it
    closes."""

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

    def must_read(self, conn: C) -> None:
        """``conn``'s peer is not keeping up with what we send it: ping it at the next tick
        and drop it ``timeout`` later unless it answers that ping (its other bytes, such as
        its own pings, no longer count)."""
        live = self._connections.get(conn)
        if live is None or live.must_read:
            return
        live.must_read = True
        live.pinged = False
        live.since = asyncio.get_running_loop().time() - self.interval

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.tick, self._run)

    def _run(self) -> None:
        self._schedule()  # first: a failing callback must not stop the keepalive
        now = asyncio.get_running_loop().time()
        ping, drop = sweep(self._connections, now, self.interval, self.timeout)
        for conn in ping:
            self._ping(conn)
        for conn in drop:
            self._drop(conn)
