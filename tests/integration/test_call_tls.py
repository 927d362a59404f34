"""A real call through a wss:// signaling server: real phones, real media on loopback.

The server serves TLS under a certificate from a test CA made here; each phone verifies it
against that CA (``PhoneConfig.ca_file``), binds its login to it, and pins the server's id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.server import SignalingServer, serve_signaling
from tests.integration.conftest import WAIT, MakeUser, server_config, wait_until
from tests.support.tls import TestCA
from voice.call.events import EndReason
from voice.errors import ServerCertificateRejected, ServerNameChanged
from voice.phone import Phone


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "pki")


@pytest.fixture
async def tls_server(ca: TestCA, tmp_path: Path) -> AsyncIterator[SignalingServer]:
    cert = ca.issue(tmp_path / "pki", "signaling", dns=["localhost"], ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=cert.cert, tls_key=cert.key)) as server:
        yield server


async def test_a_call_through_a_tls_server_connects_with_equal_sas_and_audio(
    make_user: MakeUser, tls_server: SignalingServer, ca: TestCA
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    url = tls_server.url
    pa = await Phone.connect(alice.config(url, ca_file=ca.cert_path), audio=alice.audio)
    pb = await Phone.connect(
        bob.config(f"wss://localhost:{tls_server.port}", ca_file=ca.cert_path), audio=bob.audio
    )
    try:
        assert pa.server_id == pb.server_id == tls_server.identity.server_id
        out = await pa.call("bob")
        inc = await pb.incoming(timeout=WAIT)
        await inc.accept()
        await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
        assert out.sas is not None and out.sas == inc.sas
        await wait_until(lambda: len(alice.sinks[0].frames) > 10 and len(bob.sinks[0].frames) > 10)
        stats = out.media_stats()
        assert stats is not None and stats.rtp_packets_received > 0 and stats.auth_failures == 0
        await out.hangup()
        assert (await out.wait_ended(WAIT)).reason is EndReason.HANGUP_LOCAL
        assert (await inc.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE
    finally:
        await asyncio.gather(pa.close(), pb.close())


async def test_a_phone_refuses_an_untrusted_server_and_another_deployment(
    make_user: MakeUser, tls_server: SignalingServer, ca: TestCA
) -> None:
    carol = make_user("carol")
    with pytest.raises(ServerCertificateRejected):  # the system CAs do not know the test CA
        await Phone.connect(carol.config(tls_server.url), audio=carol.audio)
    config = carol.config(tls_server.url, ca_file=ca.cert_path, expected_server_id="0" * 32)
    with pytest.raises(ServerNameChanged):
        await Phone.connect(config, audio=carol.audio)
    assert not tls_server.router.registry.exists("carol")
