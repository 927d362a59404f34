"""Socket admission and descriptor budgets (pure), the per-key buckets, and the accept-error
log throttle of the adapter."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from signaling.admission import FD_RESERVE, SocketTable, fit_to_fd_limit
from signaling.config import Config
from signaling.httpd import MAX_CLIENTS
from signaling.logs import Throttle
from signaling.ratelimit import KeyedBuckets
from signaling.server import serve_signaling
from tests.signaling.helpers import server_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_per_address_limits_refuse_the_newcomer() -> None:
    table: SocketTable[str] = SocketTable(per_ip=3, handshakes=100, handshakes_per_ip=2)
    assert table.admit("a1", "10.0.0.1") == (True, [])
    assert table.admit("a2", "10.0.0.1") == (True, [])
    assert table.admit("a3", "10.0.0.1") == (False, [])  # two handshakes in progress already
    table.logged_in("a1")
    assert table.admit("a3", "10.0.0.1") == (True, [])
    table.logged_in("a2")
    assert table.admit("a4", "10.0.0.1") == (False, [])  # three sockets in all
    assert table.dropped == {"address_handshakes": 1, "address": 1}
    table.release("a1")
    assert table.admit("a4", "10.0.0.1") == (True, [])
    assert (table.sockets, table.in_handshake) == (3, 2)


def test_the_oldest_handshake_makes_room_when_all_are_taken() -> None:
    table: SocketTable[str] = SocketTable(per_ip=10, handshakes=3, handshakes_per_ip=2)
    for i, net in enumerate(["a", "a", "b"]):
        assert table.admit(f"s{i}", net) == (True, [])
    table.logged_in("s1")  # logged in: never dropped here
    assert table.admit("s3", "c") == (True, [])
    assert table.admit("s4", "d") == (True, ["s0"])  # the oldest handshake in progress
    assert table.admit("s5", "e") == (True, ["s2"])
    table.release("s0")  # the dropped socket closing later changes nothing
    assert (table.sockets, table.in_handshake) == (4, 3)
    assert table.admit("s6", "a") == (True, ["s3"])  # "a" had one left: s0 was forgotten
    assert table.dropped["oldest"] == 3
    for key in ("s1", "s4", "s5", "s6", "s6"):
        table.release(key)
    assert (table.sockets, table.in_handshake) == (0, 0)


def test_for_config_derives_the_per_address_handshakes() -> None:
    table: SocketTable[int] = SocketTable.for_config(Config(max_handshakes=40))
    assert (table.per_ip, table.handshakes, table.handshakes_per_ip) == (64, 40, 4)
    table = SocketTable.for_config(Config())
    assert (table.per_ip, table.handshakes, table.handshakes_per_ip) == (64, 1024, 64)
    table = SocketTable.for_config(Config(max_connections_per_ip=1, max_handshakes=2))
    assert (table.per_ip, table.handshakes, table.handshakes_per_ip) == (2, 2, 2)
    with pytest.raises(ValueError):
        SocketTable(per_ip=0, handshakes=1, handshakes_per_ip=1)


@pytest.mark.parametrize(
    ("nofile", "handshakes", "connections", "per_ip"),
    [
        (256, 40, 120, 32),  # the audit's server
        (1024, 232, 696, 32),  # a common default
        (65_536, 1024, 10_000, 32),  # room for the defaults: unchanged
        (None, 1024, 10_000, 32),  # unlimited
        (64, 4, 4, 4),  # hopeless, but still a server that answers a few
    ],
)
def test_limits_fit_the_open_files_limit(
    nofile: int | None, handshakes: int, connections: int, per_ip: int
) -> None:
    fitted = fit_to_fd_limit(Config(), nofile, http_clients=MAX_CLIENTS)
    got = (fitted.max_handshakes, fitted.max_connections, fitted.max_connections_per_ip)
    assert got == (handshakes, connections, per_ip)
    if nofile is not None and nofile > 2 * (FD_RESERVE + MAX_CLIENTS):
        assert handshakes + connections + FD_RESERVE + MAX_CLIENTS <= nofile


def test_explicit_limits_are_kept_when_they_fit_and_never_raised() -> None:
    small = Config(max_connections=50, max_handshakes=10, max_connections_per_ip=5)
    assert fit_to_fd_limit(small, 1024, http_clients=MAX_CLIENTS) == small
    big = Config(max_connections=100_000, max_handshakes=100_000)
    fitted = fit_to_fd_limit(big, 1024, http_clients=MAX_CLIENTS)
    assert (fitted.max_connections, fitted.max_handshakes) == (696, 232)


def test_keyed_buckets_are_bounded_and_forget_the_least_recently_used() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=1, max_keys=2)
    assert buckets.take("a", 0.0) and not buckets.take("a", 0.0)
    assert buckets.take("b", 0.0)
    assert not buckets.take("a", 0.5)  # "a" used last: "b" is the one to go
    assert buckets.take("c", 0.5)
    assert len(buckets) == 2
    assert not buckets.take("a", 0.6)  # kept: still empty
    assert buckets.take("b", 0.6)  # forgotten: a full bucket again (its due after 0.6 s anyway)


def test_throttle_lets_one_event_through_per_interval() -> None:
    clock = Clock()
    throttle = Throttle(10.0, clock)
    assert throttle.allow() == 0
    assert [throttle.allow() for _ in range(5)] == [None] * 5
    clock.now += 10.0
    assert throttle.allow() == 5
    assert throttle.allow() is None


async def test_failed_accepts_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        async with serve_signaling(server_config()):
            handler = loop.get_exception_handler()
            assert handler is not None
            accept = {
                "message": "socket.accept() out of system resource",
                "exception": OSError(24, "Too many open files"),
            }
            with caplog.at_level(logging.WARNING, logger="signaling.server"):
                for _ in range(300):
                    handler(loop, accept)
            handler(loop, {"message": "something else"})
            lines = [r for r in caplog.records if r.getMessage() == "accept_failed"]
            assert len(lines) == 1 and lines[0].exc_info is None
            assert seen == [{"message": "something else"}]  # the rest is passed on
        assert loop.get_exception_handler() is not None  # ours is gone, the previous is back
        loop.call_exception_handler({"message": "after"})
        assert seen[-1] == {"message": "after"}
    finally:
        loop.set_exception_handler(None)
