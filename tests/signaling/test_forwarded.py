"""The client's address behind a trusted proxy (signaling/forwarded.py), and a real server
that counts its per-address limit by it: a proxy's clients are told apart, a client that
writes the header itself is not believed, and only the proxy's own health checks are logged
quietly."""

from __future__ import annotations

import asyncio
import logging

import pytest

from signaling.config import Config
from signaling.errors import ConfigError
from signaling.forwarded import client_address, is_trusted, parse_networks
from signaling.server import HEALTH_CHECK_PATH, serve_signaling
from tests.signaling.helpers import Raw, server_config

PROXIES = parse_networks(["10.0.0.5", "172.28.0.0/24", "fd00::/64"])


def test_only_a_trusted_proxy_names_the_client() -> None:
    assert client_address("10.0.0.5", ["203.0.113.9"], PROXIES) == "203.0.113.9"
    assert client_address("172.28.0.77", ["2001:db8::1"], PROXIES) == "2001:db8::1"
    assert client_address("fd00::9", ["198.51.100.1"], PROXIES) == "198.51.100.1"
    assert client_address("10.0.0.6", ["203.0.113.9"], PROXIES) == "10.0.0.6"  # not a proxy
    assert client_address("10.0.0.5", ["203.0.113.9"], ()) == "10.0.0.5"  # none trusted
    assert client_address("10.0.0.5", [], PROXIES) == "10.0.0.5"  # the proxy's own check


def test_the_last_entry_is_the_one_the_proxy_saw() -> None:
    # A client's own header comes first; the proxy appends (or adds a second header line).
    assert client_address("10.0.0.5", ["1.1.1.1, 203.0.113.9"], PROXIES) == "203.0.113.9"
    assert client_address("10.0.0.5", ["1.1.1.1", "203.0.113.9"], PROXIES) == "203.0.113.9"
    assert client_address("10.0.0.5", ["203.0.113.9, junk"], PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", ["2001:DB8::0001"], PROXIES) == "2001:db8::1"


def test_an_ipv4_proxy_seen_by_a_dual_stack_socket_is_trusted() -> None:
    assert is_trusted("::ffff:10.0.0.5", PROXIES)
    assert not is_trusted("::ffff:10.0.0.6", PROXIES)
    assert not is_trusted("?", PROXIES)


def test_a_trusted_proxy_must_be_an_address_or_network() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies: 'haproxy' is not an IP"):
        Config(db="", trusted_proxies=("haproxy",))


@pytest.mark.parametrize("trusted", [True, False], ids=["behind_proxy", "forged_header"])
async def test_the_per_address_limit_counts_the_forwarded_address(trusted: bool) -> None:
    config = server_config(
        max_connections_per_ip=1, trusted_proxies=("127.0.0.1",) if trusted else ()
    )
    async with serve_signaling(config) as server:
        first, challenge = await Raw.open(server.url, {"X-Forwarded-For": "203.0.113.1"})
        assert challenge["type"] == "challenge"
        second, answer = await Raw.open(server.url, {"X-Forwarded-For": "203.0.113.2"})
        if trusted:  # another client of the proxy: its own allowance
            assert answer["type"] == "challenge"
            third, refused = await Raw.open(server.url, {"X-Forwarded-For": "203.0.113.1"})
            assert refused["code"] == "too_many_connections"  # the first one's address again
            assert await third.closed_code() == 4004
        else:  # a client naming another address is still 127.0.0.1, already at its limit
            assert answer["code"] == "too_many_connections"
            assert await second.closed_code() == 4004
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    ("trusted", "headers", "level"),
    [
        (True, {}, logging.DEBUG),  # HAProxy's own check
        (True, {"X-Forwarded-For": "203.0.113.1"}, logging.INFO),  # a client through HAProxy
        (False, {}, logging.INFO),  # anyone else dialing the check's path
    ],
    ids=["proxy_check", "proxied_client", "direct_client"],
)
async def test_only_the_proxys_own_health_check_is_logged_quietly(
    trusted: bool, headers: dict[str, str], level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="signaling.server")
    config = server_config(trusted_proxies=("127.0.0.1",) if trusted else ())
    async with serve_signaling(config) as server:
        raw, challenge = await Raw.open(server.url + HEALTH_CHECK_PATH, headers)
        assert challenge["type"] == "challenge"
        await raw.close()
        for _ in range(200):
            disconnects = [r for r in caplog.records if r.getMessage() == "disconnect"]
            if disconnects:
                break
            await asyncio.sleep(0.01)
        assert [r.levelno for r in disconnects] == [level]
