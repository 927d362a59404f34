"""Which accepted sockets the server keeps, and limits that fit its file descriptors. Pure.

The router counts a connection once its WebSocket handshake is done. Before that, and until
its login, a socket is a *handshake in progress*: it holds a file descriptor and has proved
nothing. A slow-loris client opens many of them and never finishes. :class:`SocketTable`
follows every socket from TCP accept to close, and refuses or drops at accept time:

* more than ``per_ip`` sockets from one address (an IPv6 /64 counts as one): refused;
* more than ``handshakes_per_ip`` handshakes in progress from one address: refused;
* more than ``handshakes`` handshakes in progress in all: the *oldest* one is dropped to make
  room. An honest client finishes its handshake and login in a few round trips, so it is
  never the oldest for long; a socket that sits there is.

Logged-in sockets are never dropped here; the router's ``max_connections`` bounds them. So the
server holds at most ``max_connections + max_handshakes`` WebSocket sockets, and
:func:`fit_to_fd_limit` lowers both so that they, the ops HTTP clients and a reserve fit under
``RLIMIT_NOFILE``: accept() never fails for lack of descriptors, and /healthz keeps answering.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from signaling.config import Config

K = TypeVar("K", bound=Hashable)

# Descriptors kept for everything but client sockets: stdio, the event loop (epoll, self-pipe),
# the listening sockets, SQLite (database, WAL, shared memory), logs, name resolution.
FD_RESERVE = 32


class SocketTable(Generic[K]):
    """Sockets from accept to close, by key (the adapter's connection object)."""

    def __init__(self, *, per_ip: int, handshakes: int, handshakes_per_ip: int) -> None:
        if min(per_ip, handshakes, handshakes_per_ip) < 1:
            raise ValueError("every limit must be >= 1")
        self.per_ip = per_ip
        self.handshakes = handshakes
        self.handshakes_per_ip = handshakes_per_ip
        self.dropped: Counter[str] = Counter()  # by reason: address, address_handshakes, oldest
        self._pending: OrderedDict[K, str] = OrderedDict()  # oldest first
        self._open: dict[K, str] = {}
        self._sockets: Counter[str] = Counter()
        self._pending_by_net: Counter[str] = Counter()

    @classmethod
    def for_config(cls, config: Config) -> SocketTable[K]:
        handshakes = config.max_handshakes
        per_ip = 2 * config.max_connections_per_ip  # room to send too_many_connections
        per_ip_handshakes = min(per_ip, handshakes, max(4, handshakes // 16))
        return cls(per_ip=per_ip, handshakes=handshakes, handshakes_per_ip=per_ip_handshakes)

    @property
    def in_handshake(self) -> int:
        return len(self._pending)

    @property
    def sockets(self) -> int:
        return len(self._pending) + len(self._open)

    def admit(self, key: K, net: str) -> tuple[bool, list[K]]:
        """A socket from ``net`` was accepted: keep it? And which older ones to drop for it."""
        if self._sockets[net] >= self.per_ip:
            self.dropped["address"] += 1
            return False, []
        if self._pending_by_net[net] >= self.handshakes_per_ip:
            self.dropped["address_handshakes"] += 1
            return False, []
        evicted: list[K] = []
        while len(self._pending) >= self.handshakes:
            oldest, oldest_net = self._pending.popitem(last=False)
            self._forget(oldest_net, pending=True)
            evicted.append(oldest)
            self.dropped["oldest"] += 1
        self._pending[key] = net
        self._sockets[net] += 1
        self._pending_by_net[net] += 1
        return True, evicted

    def held(self) -> list[K]:
        """Every socket held, oldest handshakes first."""
        return [*self._pending, *self._open]

    def logged_in(self, key: K) -> None:
        """``key`` finished its login: no longer a handshake in progress."""
        net = self._pending.pop(key, None)
        if net is not None:
            _decrement(self._pending_by_net, net)
            self._open[key] = net

    def release(self, key: K) -> None:
        """``key`` is closed (a dropped one was forgotten already: nothing happens)."""
        net = self._pending.pop(key, None)
        if net is not None:
            self._forget(net, pending=True)
            return
        net = self._open.pop(key, None)
        if net is not None:
            self._forget(net, pending=False)

    def _forget(self, net: str, *, pending: bool) -> None:
        _decrement(self._sockets, net)
        if pending:
            _decrement(self._pending_by_net, net)


def _decrement(counter: Counter[str], net: str) -> None:
    counter[net] -= 1
    if counter[net] <= 0:
        del counter[net]


def fit_to_fd_limit(config: Config, nofile: int | None, *, http_clients: int) -> Config:
    """``config`` with ``max_handshakes``, ``max_connections`` and ``max_connections_per_ip``
    lowered (never raised) so that every socket fits under ``nofile`` descriptors, after
    ``http_clients`` ops HTTP clients and :data:`FD_RESERVE`. ``None``: no limit to fit."""
    if nofile is None:
        return config
    usable = max(8, nofile - FD_RESERVE - http_clients)
    handshakes = min(config.max_handshakes, max(4, usable // 4))
    connections = min(config.max_connections, max(4, usable - handshakes))
    per_ip = min(config.max_connections_per_ip, connections)
    return config.replace(
        max_handshakes=handshakes, max_connections=connections, max_connections_per_ip=per_ip
    )
