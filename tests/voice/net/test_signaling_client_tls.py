"""voice.net.client transport rules: wss:// verified (system CAs or a CA file), ws:// only to
loopback unless insecure, and the server id checked before anything is signed."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.server import SignalingServer, serve_signaling
from tests.signaling.helpers import make_user, server_config, url_of
from tests.support.tls import IssuedCert, TestCA
from voice.errors import (
    InsecureServerUrl,
    ServerCertificateRejected,
    ServerNameChanged,
    SignalingUnreachable,
    UsageError,
)
from voice.exitcodes import ExitCode, for_exception
from voice.net.client import SignalingClient
from voice.net.transport import server_address


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "pki")


@pytest.fixture
async def tls_server(ca: TestCA, tmp_path: Path) -> AsyncIterator[SignalingServer]:
    cert: IssuedCert = ca.issue(tmp_path / "pki", "real", dns=["localhost"], ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=cert.cert, tls_key=cert.key)) as server:
        yield server


async def connect(url: str, **kw: object) -> SignalingClient:
    user = make_user("alice", seed=1)
    return await SignalingClient.connect(url, "alice", user.pub, user.sign, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "secure", "host"),
    [
        ("wss://Voice.Example:443/", True, "voice.example"),
        ("wss://[::1]:8765/?invite=abc", True, "::1"),
        ("ws://127.0.0.1:8765", False, "127.0.0.1"),
        ("ws://127.1.2.3:8765", False, "127.1.2.3"),
        ("ws://localhost:8765", False, "localhost"),
        ("ws://[::1]:8765", False, "::1"),
    ],
)
def test_server_addresses(url: str, secure: bool, host: str) -> None:
    assert server_address(url) == (secure, host)


@pytest.mark.parametrize(
    "url", ["ws://203.0.113.7:8765", "ws://voice.example", "ws://0.0.0.0:1", "ws://10.0.0.1:1"]
)
def test_plain_ws_to_a_host_that_is_not_loopback_needs_insecure(url: str) -> None:
    with pytest.raises(InsecureServerUrl, match="--insecure"):
        server_address(url)
    assert server_address(url, insecure=True) == (False, url.split("//")[1].split(":")[0])
    assert for_exception(InsecureServerUrl("x")) == ExitCode.USAGE


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "127.0.0.1:8765", "wss://", "wss://a b/"])
async def test_what_is_not_a_server_url_is_unreachable(url: str) -> None:
    with pytest.raises(SignalingUnreachable):
        await connect(url)


async def test_insecure_lets_ws_try_a_remote_address() -> None:
    with socket.socket() as probe:  # 0.0.0.0 reaches this host, but is not a loopback name
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InsecureServerUrl):
        await connect(f"ws://0.0.0.0:{port}")
    with pytest.raises(SignalingUnreachable) as info:
        await connect(f"ws://0.0.0.0:{port}", insecure=True)
    assert not isinstance(info.value, InsecureServerUrl)


async def test_wss_verifies_against_the_given_ca(tls_server: SignalingServer, ca: TestCA) -> None:
    for url in (tls_server.url, f"wss://localhost:{tls_server.port}"):
        client = await connect(url, ca_file=ca.cert_path)
        assert client.binding == tls_server.identity.binding
        await client.close()


async def test_an_untrusted_or_misnamed_certificate_is_refused(
    tls_server: SignalingServer, ca: TestCA, tmp_path: Path
) -> None:
    with pytest.raises(ServerCertificateRejected, match="--ca"):
        await connect(tls_server.url)  # the system CAs do not know the test CA
    other = TestCA.create(tmp_path / "other")
    with pytest.raises(ServerCertificateRejected):
        await connect(tls_server.url, ca_file=other.cert_path)
    assert tls_server.router.stats.logins["ok"] == 0  # nothing reached the login
    ip_only = ca.issue(tmp_path / "pki", "ip-only", ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=ip_only.cert, tls_key=ip_only.key)) as srv:
        with pytest.raises(ServerCertificateRejected):  # its certificate does not name localhost
            await connect(f"wss://localhost:{srv.port}", ca_file=ca.cert_path)
    assert for_exception(ServerCertificateRejected("x")) == ExitCode.LOGIN_REFUSED


async def test_a_bad_ca_file_is_a_usage_error(tls_server: SignalingServer, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for path in (junk, tmp_path / "missing.pem"):
        with pytest.raises(UsageError, match="--ca"):
            await connect(tls_server.url, ca_file=path)


async def test_another_server_id_is_refused_before_signing() -> None:
    async with serve_signaling(server_config()) as server:
        with pytest.raises(ServerNameChanged, match="id"):
            await connect(url_of(server), expected_server_id="f" * 32)
        assert server.router.stats.logins == {}  # no login frame ever arrived
        client = await connect(url_of(server), expected_server_id=server.identity.server_id)
        assert client.server_id == server.identity.server_id and client.binding == b""
        await client.close()
