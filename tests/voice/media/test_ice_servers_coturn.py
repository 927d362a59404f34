"""STUN and TURN through a real coturn listening on UDP, TCP and TLS (loopback).

Every TURN URI the server hands out yields a relay candidate (gathered concurrently, each
remembered with the transport that reaches it); STUN gives server-reflexive candidates; the
relay-only policy yields relay candidates only; TLS checks the relay's certificate; a dead
server costs the gathering bound, no more; and two sessions talk over TURN-over-TLS only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from aioice import stun

from signaling.turn import turn_credentials, turn_label
from tests.support.coturn import Coturn, running_coturn
from tests.support.media import connect_and_start
from tests.support.tls import TestCA
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.errors import IceFailed
from voice.media import ice
from voice.media.ice import IceServers, StunServer, TurnServer
from voice.media.session import MediaSession
from voice.phone.turn import parse_ice_uris


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("turn-ca"))


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[Coturn]:
    folder = tmp_path_factory.mktemp("coturn-tls")
    cert = ca.issue(folder, "turn", ips=["127.0.0.1"])
    with running_coturn(folder, tcp=True, tls=cert) as server:
        yield server


def _servers(coturn: Coturn, user: str, ca: TestCA, *, only: str | None = None) -> IceServers:
    username, password = turn_credentials(coturn.secret, user, 600, time.time())
    uris = [u for u in coturn.uris() if only is None or u.startswith(only)]
    parsed = parse_ice_uris(uris, username, password)
    return IceServers(stun=parsed.stun, turn=parsed.turn, ca_file=ca.cert_path)


async def test_every_turn_uri_gives_a_relay_candidate(coturn: Coturn, ca: TestCA) -> None:
    servers = _servers(coturn, "everyuri", ca)
    assert [t.relay_transport for t in servers.turn] == ["udp", "tcp", "tls"]
    connection = ice.make_connection(controlling=True, relay_only=True)
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        gathered = await ice.gather(connection, ["127.0.0.1"], servers)
        assert loop.time() - began < ice.SERVER_TIMEOUT  # concurrently, nothing timed out
        candidates = connection.local_candidates
        assert len(candidates) == 3 and all(c.type == "relay" for c in candidates)
        assert all(c.transport == "udp" for c in candidates)  # relayed side: UDP always
        assert all((c.related_address, c.related_port) == ("0.0.0.0", 9) for c in candidates)
        assert sorted(gathered.relay_transports.values()) == ["tcp", "tls", "udp"]
        assert len({c.foundation for c in candidates}) == 3
        # the cheapest leg to the relay is preferred: UDP, then TCP, then TLS
        by_how = {gathered.relay_transports[(c.host, c.port)]: c.priority for c in candidates}
        assert by_how["udp"] > by_how["tcp"] > by_how["tls"]
        assert [a.error for a in gathered.attempts] == [None, None, None]
        for text in ice.candidates_to_sdp(connection):
            assert ice.parse_candidate(text).type == "relay"  # the peer's strict parser agrees
    finally:
        await connection.close()
    log = coturn.log.read_text()
    label = turn_label(coturn.secret, "everyuri")
    assert f"{label}>: incoming packet ALLOCATE processed, success" in log


async def test_all_candidate_kinds_with_the_default_policy(coturn: Coturn, ca: TestCA) -> None:
    servers = _servers(coturn, "allkinds", ca)
    connection = ice.make_connection(controlling=False)
    try:
        gathered = await ice.gather(connection, ["127.0.0.1"], servers)
        kinds = sorted(c.type for c in connection.local_candidates)
        assert kinds == ["host", "relay", "relay", "relay"]
        # coturn's STUN answered; on loopback the srflx equals the host one (no NAT) and is
        # left out as redundant (RFC 8445 section 5.1.3)
        stun_attempts = [a for a in gathered.attempts if a.kind == "srflx"]
        assert [(a.address, a.error) for a in stun_attempts] == [("127.0.0.1", None)]
        relays = [c for c in connection.local_candidates if c.type == "relay"]
        assert all(c.related_address == "127.0.0.1" for c in relays)  # not hidden here
        summary = ice.describe_attempts(gathered, [])
        assert summary.startswith("tried host 127.0.0.1, srflx 127.0.0.1, relay 127.0.0.1 via")
        assert f"turns:127.0.0.1:{coturn.tls_port}" in summary
        assert "allkinds" not in summary  # no user name, no password
    finally:
        await connection.close()


class _FakeStun(asyncio.DatagramProtocol):
    """Answers every binding request with a fixed public address (a NAT's view)."""

    def __init__(self, mapped: tuple[str, int]) -> None:
        self.mapped = mapped
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = self.mapped
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


async def test_stun_gives_a_server_reflexive_candidate_per_ipv4_host() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _FakeStun(("203.0.113.7", 40000)), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    connection = ice.make_connection(controlling=True)
    try:
        servers = IceServers(stun=(StunServer("127.0.0.1", port),))
        gathered = await ice.gather(connection, ["127.0.0.1", "::1"], servers)
        srflx = [c for c in connection.local_candidates if c.type == "srflx"]
        assert [(c.host, c.port, c.related_address) for c in srflx] == [
            ("203.0.113.7", 40000, "127.0.0.1")  # one: STUN is IPv4 only
        ]
        assert ice.parse_candidate(srflx[0].to_sdp()).type == "srflx"
        assert "srflx 203.0.113.7" in ice.describe_attempts(gathered, [])
    finally:
        await connection.close()
        transport.close()


async def test_a_dead_or_untrusted_server_is_skipped_within_the_bound(
    coturn: Coturn, ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes requests, never answers
    silent.bind(("127.0.0.1", 0))
    dead = silent.getsockname()[1]
    good = _servers(coturn, "skipper", ca, only="turn:")
    username, password = good.turn[0].username, good.turn[0].password
    other_ca = TestCA.create(tmp_path, "other")
    servers = IceServers(
        stun=(StunServer("127.0.0.1", dead),),
        turn=(
            TurnServer("127.0.0.1", dead, username, password),
            TurnServer("127.0.0.1", coturn.tls_port or 0, username, password, "tcp", tls=True),
            *good.turn,
        ),
        ca_file=other_ca.cert_path,  # the TLS relay's certificate is not from this CA
    )
    connection = ice.make_connection(controlling=True)
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        with caplog.at_level(logging.WARNING, logger="voice.media.ice"):
            gathered = await ice.gather(connection, ["127.0.0.1"], servers, server_timeout=1.0)
        assert loop.time() - began < 1.0 + 1.0
        kinds = sorted(c.type for c in connection.local_candidates)
        assert kinds == ["host", "relay", "relay"]  # the good UDP and TCP relays
        errors = {a.server: a.error for a in gathered.attempts if a.error is not None}
        assert errors[f"stun:127.0.0.1:{dead}"] == "no answer in 1 s"
        assert errors[f"turn:127.0.0.1:{dead}?transport=udp"] == "no answer in 1 s"
        assert "CERTIFICATE_VERIFY_FAILED" in errors[f"turns:127.0.0.1:{coturn.tls_port}"]
        assert password not in caplog.text and "skipper" not in caplog.text
        assert caplog.text.count("ICE: ") == 3  # one line per failed server
    finally:
        await connection.close()
        silent.close()


async def test_relay_only_fails_clearly_when_no_allocation_succeeds(ca: TestCA) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    servers = IceServers(turn=(TurnServer("127.0.0.1", silent.getsockname()[1], "u", "p"),))
    try:
        with pytest.raises(IceFailed, match=r"no local ICE candidate.*relay turn:127\.0\.0\.1"):
            await MediaSession.create(
                controlling=True,
                source=ToneSource(),
                sink=MemorySink(),
                ice_servers=servers,
                relay_only=True,
            )
    finally:
        silent.close()


async def test_two_sessions_talk_through_turn_over_tls_only(coturn: Coturn, ca: TestCA) -> None:
    heard = MemorySink()
    alice = await MediaSession.create(
        controlling=True,
        source=ToneSource(440.0),
        sink=MemorySink(),
        ice_servers=_servers(coturn, "tlsalice", ca, only="turns:"),
        relay_only=True,
    )
    bob = await MediaSession.create(
        controlling=False,
        source=ToneSource(880.0),
        sink=heard,
        ice_servers=_servers(coturn, "tlsbob", ca, only="turns:"),
        relay_only=True,
    )
    try:
        for session in (alice, bob):
            candidates = session.local_description()["ice"]["candidates"]
            assert len(candidates) == 1 and " typ relay" in candidates[0]
        await connect_and_start(alice, bob)
        await asyncio.wait_for(bob.first_audio.wait(), 10)
        await asyncio.sleep(0.5)
        for session in (alice, bob):
            path = session.path()
            assert path is not None
            assert (path.kind, path.local_type, path.remote_type) == ("relay", "relay", "relay")
            assert path.local_transport == "tls"
            assert session.stats().path == "relay (tls)"
        assert bob.stats().rtp_packets_received > 10 and bob.stats().auth_failures == 0
        assert "relay 127.0.0.1 via turns:" in alice.attempted()
        assert "peer offered relay 127.0.0.1" in alice.attempted()
    finally:
        await alice.close()
        await bob.close()
    assert alice.path() is None
