"""voice.media.ice: loopback host candidates (pinned aioice internals), TURN config, parsing."""

from __future__ import annotations

import asyncio
import socket

import aioice
import pytest
from aioice import Connection, TransportPolicy

from voice.errors import BadDescription, IceFailed, MediaError
from voice.media import ice
from voice.media.ice import IceServers, StunServer, TurnServer


def test_aioice_internals_we_touch_are_still_there() -> None:
    """Fails loudly when aioice moves on: re-check _install_local_candidates, then re-pin."""
    assert aioice.__version__ == ice.PINNED_AIOICE == "0.13.0"
    connection = Connection(ice_controlling=True)
    assert connection._local_candidates == []
    assert connection._local_candidates_start is False
    assert connection._local_candidates_end is False
    assert connection._protocols == [] and connection._nominated == {}


async def test_gathers_loopback_host_candidate_that_aioice_would_skip() -> None:
    connection = ice.make_connection(controlling=True)
    try:
        candidates = (await ice.gather(connection, ["127.0.0.1"])).candidates
        assert [c.host for c in candidates] == ["127.0.0.1"]
        assert [c.host for c in connection.local_candidates] == ["127.0.0.1"]
        assert candidates[0].type == "host" and candidates[0].port > 0
        await connection.gather_candidates()  # now a no-op: nothing on other interfaces
        assert [c.host for c in connection.local_candidates] == ["127.0.0.1"]
        sdp = ice.candidates_to_sdp(connection)
        assert ice.parse_candidate(sdp[0]).port == candidates[0].port
        with pytest.raises(MediaError, match="already"):
            ice._install_local_candidates(connection, candidates)
    finally:
        await connection.close()


async def test_two_loopback_connections_connect_and_carry_data() -> None:
    a = ice.make_connection(controlling=True)
    b = ice.make_connection(controlling=False)
    try:
        await ice.gather(a, ["127.0.0.1"])
        await ice.gather(b, ["127.0.0.1"])
        await asyncio.gather(
            ice.connect(
                a, ufrag=b.local_username, pwd=b.local_password, candidates=b.local_candidates
            ),
            ice.connect(
                b, ufrag=a.local_username, pwd=a.local_password, candidates=a.local_candidates
            ),
        )
        await a.send(b"\x80hello")
        assert await asyncio.wait_for(b.recv(), 2) == b"\x80hello"
    finally:
        await a.close()
        await b.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("peer", ["closed port", "silent socket"])
async def test_dead_peer_fails_within_timeout(peer: str) -> None:
    silent = None
    if peer == "silent socket":  # receives the checks, never answers
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
    else:
        port = free_udp_port()
    remote = ice.parse_candidate(f"1 1 udp 2130706431 127.0.0.1 {port} typ host")
    connection = ice.make_connection(controlling=True)
    loop = asyncio.get_running_loop()
    try:
        await ice.gather(connection, ["127.0.0.1"])
        began = loop.time()
        with pytest.raises(IceFailed):
            await ice.connect(
                connection,
                ufrag="abcd",
                pwd="a" * 22,
                candidates=[remote],
                connect_timeout=1.0,
            )
        assert loop.time() - began < 1.0 + 2.0  # the timeout holds (generous scheduling slack)
    finally:
        await connection.close()
        if silent is not None:
            silent.close()


def test_ice_server_values_hide_the_password() -> None:
    turn = TurnServer("127.0.0.1", 3478, "user", "secret-pw", transport="tcp")
    servers = IceServers(stun=(StunServer("127.0.0.1"),), turn=(turn,))
    for text in (repr(turn), repr(servers), str(servers)):
        assert "secret-pw" not in text
    assert turn.uri == "turn:127.0.0.1:3478?transport=tcp" and turn.relay_transport == "tcp"
    tls = TurnServer("::1", 5349, "u", "p", "tcp", tls=True)
    assert tls.uri == "turns:[::1]:5349" and tls.relay_transport == "tls"
    assert servers.has_relay and not IceServers(stun=servers.stun).has_relay
    connection = ice.make_connection(controlling=False, relay_only=True)
    assert connection._transport_policy == TransportPolicy.RELAY
    assert connection.turn_server is None  # ours: every TURN server, not aioice's one
    assert ice.make_connection(controlling=True)._transport_policy == TransportPolicy.ALL


def test_turn_config_is_checked() -> None:
    with pytest.raises(ValueError):
        TurnServer("127.0.0.1", 0, "u", "p")
    with pytest.raises(ValueError):
        TurnServer("127.0.0.1", 3478, "u", "p", transport="tls")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TurnServer("127.0.0.1", 3478, "u", "p", "udp", tls=True)  # TLS needs TCP
    with pytest.raises(ValueError):
        TurnServer("bad host!", 3478, "u", "p")
    with pytest.raises(ValueError):
        StunServer("127.0.0.1", 70000)


async def test_relay_only_without_turn_gathers_nothing() -> None:
    connection = ice.make_connection(controlling=True, relay_only=True)
    try:
        with pytest.raises(IceFailed, match="no local ICE candidate"):
            await ice.gather(connection, ["127.0.0.1"])
    finally:
        await connection.close()


def test_interface_addresses_skip_loopback_and_link_local() -> None:
    import ipaddress

    addresses = ice.interface_addresses()
    for text in addresses:
        ip = ipaddress.ip_address(text)
        assert not (ip.is_loopback or ip.is_link_local or ip.is_unspecified), text
    assert len(addresses) <= ice.MAX_HOST_ADDRESSES
    with_loopback = ice.interface_addresses(include_loopback=True)
    assert with_loopback[0] == "127.0.0.1"
    assert set(addresses) <= set(with_loopback)


def test_path_kind() -> None:
    assert ice.path_kind("host", "host") == "host"
    assert ice.path_kind("host", "prflx") == "srflx"
    assert ice.path_kind("srflx", "host") == "srflx"
    assert ice.path_kind("relay", "srflx") == "relay"
    assert ice.path_kind("host", "relay") == "relay"


async def test_host_addresses_must_be_ip_literals() -> None:
    connection = ice.make_connection(controlling=True)
    try:
        with pytest.raises(MediaError):
            await ice.gather(connection, ["localhost"])
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a candidate",
        "1 1 udp 100 example.local 5000 typ host",  # mDNS / host name
        "1 2 udp 100 127.0.0.1 5000 typ host",  # component 2
        "1 1 tcp 100 127.0.0.1 5000 typ host tcptype passive",
        "1 1 udp 100 127.0.0.1 5000 typ prflx",
        "1 1 udp 100 127.0.0.1 0 typ host",
        "1 1 udp 100 127.0.0.1 70000 typ host",
        "1 1 udp 100 0.0.0.0 5000 typ host",
        "1 1 udp 100 224.0.0.1 5000 typ host",
        "1 1 udp abc 127.0.0.1 5000 typ host",
        "1 1 udp 100 127.0.0.1 5000 typ host " + "x" * 600,
        12345,
    ],
)
def test_bad_candidates_are_refused(text: object) -> None:
    with pytest.raises(BadDescription):
        ice.parse_candidate(text)


@pytest.mark.parametrize(
    ("ufrag", "pwd"),
    [("abc", "a" * 22), ("abcd", "a" * 21), ("ab d", "a" * 22), ("abcd", 5), (None, "a" * 22)],
)
def test_bad_credentials_are_refused(ufrag: object, pwd: object) -> None:
    with pytest.raises(BadDescription):
        ice.check_credentials(ufrag, pwd)
