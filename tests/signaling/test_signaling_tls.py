"""TLS, the server id and login v2's binding: pure checks first, then a real wss:// server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from signaling.auth import (
    LOOPBACK_HOSTS,
    ServerIdentity,
    certificate_hosts,
    host_matches,
    is_loopback_host,
    tls_server_end_point,
)
from signaling.cli import main
from signaling.config import Config
from signaling.errors import ConfigError
from signaling.messages import Login
from signaling.protocol import login_message
from signaling.server import serve_signaling
from signaling.serveridentity import load_or_create_server_id
from signaling.wire import normalize_host
from tests.signaling.helpers import Raw, make_user, server_config
from tests.support.tls import TestCA
from voice.errors import SignalingUnreachable
from voice.net.client import SignalingClient

SERVER_ID = "5e" * 16


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "pki")


# -- pure: the binding, the names, the check -------------------------------------------------


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        (hashes.SHA256(), hashlib.sha256),
        (hashes.SHA384(), hashlib.sha384),
        (hashes.SHA512(), hashlib.sha512),
    ],
)
def test_end_point_hash_follows_the_certificate_signature_hash(
    ca: TestCA, tmp_path: Path, digest: hashes.HashAlgorithm, expected: Any
) -> None:
    """RFC 5929 4.1: the hash function of the certificate's signature algorithm."""
    cert = ca.issue(tmp_path, "s", dns=["a.example"], digest=digest)
    assert tls_server_end_point(cert.der) == expected(cert.der).digest()


def test_end_point_hash_is_sha256_for_a_hashless_signature() -> None:
    """Ed25519 signs without a separate hash; RFC 5929 leaves that open, we use SHA-256 (as for
    MD5 and SHA-1, which the RFC replaces by SHA-256)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()
    assert certificate_hosts(der) == ()  # no subjectAltName: no names


def test_certificate_names_are_normalised(ca: TestCA, tmp_path: Path) -> None:
    cert = ca.issue(
        tmp_path, "s", dns=["Signal.Example.", "*.Voice.Example", "localhost"], ips=["::1"]
    )
    assert certificate_hosts(cert.der) == (
        "signal.example",
        "*.voice.example",
        "localhost",
        "::1",
    )


@pytest.mark.parametrize(
    ("host", "pattern", "match"),
    [
        ("a.voice.example", "*.voice.example", True),
        ("voice.example", "*.voice.example", False),  # a wildcard needs its label
        ("a.b.voice.example", "*.voice.example", False),  # and covers one label only
        ("voice.example", "voice.example", True),
        ("voice.example.evil", "voice.example", False),
        ("127.0.0.1", "127.0.0.1", True),
    ],
)
def test_host_matching(host: str, pattern: str, match: bool) -> None:
    assert host_matches(host, pattern) is match


@pytest.mark.parametrize(
    ("dialed", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]", "::1"),
        ("0:0::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("voice_signaling", "voice_signaling"),  # container names
    ],
)
def test_hosts_are_normalised(dialed: str, normal: str) -> None:
    assert normalize_host(dialed) == normal


@pytest.mark.parametrize("bad", ["", "a..b", "-a.example", "a b", "fe80::1%eth0", "a" * 64])
def test_bad_hosts_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(bad)


def test_loopback_hosts() -> None:
    assert all(is_loopback_host(h) for h in ("localhost", "127.0.0.1", "127.9.9.9", "::1"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "10.0.0.1", "localhost.example"))


def test_which_hosts_a_server_answers_to(ca: TestCA, tmp_path: Path) -> None:
    cert = ca.issue(tmp_path, "s", dns=["voice.example"], ips=["192.0.2.1"])
    assert ServerIdentity.build("n", SERVER_ID).hosts == LOOPBACK_HOSTS  # plain: loopback
    tls = ServerIdentity.build("n", SERVER_ID, certificate=cert.der)
    assert tls.hosts == ("voice.example", "192.0.2.1")  # TLS: the certificate's names
    assert tls.binding == hashlib.sha256(cert.der).digest()
    chosen = ServerIdentity.build(
        "n", SERVER_ID, certificate=cert.der, public_hosts=["Voice.Example"]
    )
    assert chosen.hosts == ("voice.example",)  # --public-host: only those
    nameless = TestCA.create(tmp_path / "other").issue(tmp_path, "t")
    with pytest.raises(ValueError, match="public_host"):
        ServerIdentity.build("n", SERVER_ID, certificate=nameless.der)


def _login(me: ServerIdentity, nonce: bytes, **saw: Any) -> Login:
    """bob's login v2 to ``me``, from a client that saw (and signed) ``saw`` (default: our first
    host and our binding) and sends it as is; ``.sent(...)`` rewrites the clear fields after."""
    user = make_user("bob", seed=3)
    seen: dict[str, Any] = {"host": me.hosts[0], "binding": me.binding, **saw}
    signed = login_message(
        server=me.name, server_id=me.server_id, user="bob", key=user.pub, nonce=nonce, **seen
    )
    return Login("bob", user.pub, user.sign(signed), **seen)


def _rewritten(login: Login, **clear: Any) -> Login:
    """What a relay forwards after replacing fields that travel in clear."""
    fields = {"host": login.host, "binding": login.binding, **clear}
    return Login(login.user, login.key, login.sig, **fields)


def test_the_login_check_refuses_another_certificate_host_or_signature(
    ca: TestCA, tmp_path: Path
) -> None:
    cert = ca.issue(tmp_path, "s", dns=["voice.example", "alt.example"])
    me = ServerIdentity.build("voice-signaling", SERVER_ID, certificate=cert.der)
    nonce = b"N" * 32
    assert me.check_login(_login(me, nonce), nonce) is None
    assert me.check_login(_login(me, nonce, host="alt.example"), nonce) is None
    relay = hashlib.sha256(b"relay certificate").digest()
    evil = "evil.example"
    cases = [
        (_login(me, nonce, binding=relay), "wrong_server"),  # forwarded as it is
        (_login(me, nonce, binding=b""), "wrong_server"),
        (_login(me, nonce, host=evil), "wrong_server"),
        # a relay that rewrites the clear fields: the signature still covers what bob saw
        (_rewritten(_login(me, nonce, binding=relay), binding=me.binding), "bad_signature"),
        (_rewritten(_login(me, nonce, host=evil), host="voice.example"), "bad_signature"),
        (_rewritten(_login(me, nonce), host="alt.example"), "bad_signature"),
    ]
    for login, code in cases:
        refusal = me.check_login(login, nonce)
        assert refusal is not None and refusal.code == code
    assert me.check_login(_login(me, nonce), b"M" * 32) is not None  # another nonce
    other = ServerIdentity.build("voice-signaling", "a" * 32, certificate=cert.der)
    assert other.check_login(_login(me, nonce), nonce) is not None  # another deployment


# -- configuration and the server id ---------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"tls_cert": "cert.pem"},
        {"tls_key": "key.pem"},
        {"server_id": "short"},
        {"server_id": "UPPER" * 4},
        {"public_host": ("not a host",)},
    ],
)
def test_identity_settings_are_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Config(**changes)


def test_tls_flags_and_environment_are_settings() -> None:
    env = {"VOICE_SIGNALING_TLS_CERT": "/c.pem", "VOICE_SIGNALING_TLS_KEY": "/k.pem"}
    config = Config.from_sources(env, {"public_host": "a.example, b.example"})
    assert (config.tls_cert, config.tls_key) == ("/c.pem", "/k.pem")
    assert config.public_host == ("a.example", "b.example")


def test_the_server_id_is_generated_once_and_kept_next_to_the_registry(tmp_path: Path) -> None:
    db = str(tmp_path / "registry.sqlite3")
    first = load_or_create_server_id(db)
    assert len(first) == 32 and load_or_create_server_id(db) == first
    assert (tmp_path / "registry.sqlite3.server-id").read_text() == first + "\n"
    assert load_or_create_server_id(":memory:") != load_or_create_server_id(":memory:")
    (tmp_path / "registry.sqlite3.server-id").write_text("not an id\n")
    with pytest.raises(ConfigError, match="server id"):
        load_or_create_server_id(db)


async def test_a_restarted_server_keeps_its_id_and_a_set_one_wins(tmp_path: Path) -> None:
    db = str(tmp_path / "registry.sqlite3")
    async with serve_signaling(server_config(db=db)) as first:
        kept = first.identity.server_id
    async with serve_signaling(server_config(db=db)) as again:
        assert again.identity.server_id == kept
        raw, challenge = await Raw.open(again.url)
        assert challenge["server_id"] == kept
        await raw.close()
    async with serve_signaling(server_config(db=db, server_id=SERVER_ID)) as chosen:
        assert chosen.identity.server_id == SERVER_ID


def test_an_unreadable_certificate_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.pem")
    argv = ["--port", "0", "--http-port", "0", "--db", ":memory:"]
    assert main([*argv, "--tls-cert", missing, "--tls-key", missing]) == 2
    assert "tls_cert" in capsys.readouterr().err


# -- a real wss:// server ---------------------------------------------------------------------


async def test_the_server_serves_wss_and_binds_logins_to_its_certificate(
    ca: TestCA, tmp_path: Path
) -> None:
    cert = ca.issue(tmp_path, "real", ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=cert.cert, tls_key=cert.key)) as server:
        assert server.url.startswith("wss://127.0.0.1:")
        assert server.identity.binding == hashlib.sha256(cert.der).digest()
        user = make_user("alice")
        client = await SignalingClient.connect(
            server.url, "alice", user.pub, user.sign, ca_file=ca.cert_path
        )
        assert client.binding == server.identity.binding
        assert client.server_id == server.identity.server_id
        await client.send("alice", b"over tls")
        assert (await client.receive()).body == b"over tls"
        await client.close()
        with pytest.raises(SignalingUnreachable):  # no plain WebSocket on the TLS port
            await SignalingClient.connect(
                f"ws://127.0.0.1:{server.port}", "alice", user.pub, user.sign, open_timeout=3
            )
        reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
        writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")  # health stays plain HTTP
        assert b'"status": "ok"' in await reader.read()
        writer.close()


async def test_a_plain_login_to_a_tls_server_is_wrong_server(ca: TestCA, tmp_path: Path) -> None:
    """A login bound to no certificate (what a client behind a TLS-terminating proxy, or one
    that saw another certificate, would send) gets a precise error, then close 4001."""
    cert = ca.issue(tmp_path, "real", ips=["127.0.0.1"])
    config = server_config(tls_cert=cert.cert, tls_key=cert.key)
    async with serve_signaling(config) as server:
        trust = ssl.create_default_context(cafile=str(ca.cert_path))
        raw = Raw(await connect(server.url, ssl=trust, compression=None))
        challenge = await raw.recv()
        await raw.send(make_user("alice").login_frame(challenge))  # binding b"": plain
        assert (await raw.recv())["code"] == "wrong_server"
        assert await raw.closed_code() == 4001


async def test_sockets_that_never_start_their_tls_handshake_are_held_to_the_limits(
    ca: TestCA, tmp_path: Path
) -> None:
    """TLS used to run before the server saw a socket: sockets that never sent a ClientHello
    escaped the per-address and handshake limits and could take every descriptor. They are
    counted from TCP accept now: one address gets its handshake slots, the rest are closed at
    once, and a client from another address is served over wss meanwhile."""
    cert = ca.issue(tmp_path, "real", ips=["127.0.0.1"])
    config = server_config(
        tls_cert=cert.cert, tls_key=cert.key, max_handshakes=64, max_connections_per_ip=32
    )
    async with serve_signaling(config) as server:
        per_address = server.sockets.handshakes_per_ip
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(40)]
        try:
            await asyncio.sleep(0.2)
            assert server.sockets.in_handshake == per_address < 40
            closed = 0
            for reader, _ in idle:  # those past the address's slots: closed, nothing said
                try:
                    closed += await asyncio.wait_for(reader.read(), 0.05) == b""
                except TimeoutError:
                    pass  # held, waiting for a ClientHello
                except ConnectionError:
                    closed += 1
            assert closed == 40 - per_address
            trust = ssl.create_default_context(cafile=str(ca.cert_path))
            other = await connect(  # another address: its own slots
                server.url,
                ssl=trust,
                compression=None,
                sock=_bound_socket("127.0.0.2", server.port),
                server_hostname="127.0.0.1",
            )
            assert (await Raw(other).recv())["type"] == "challenge"  # TLS and WebSocket done
            await other.close()
        finally:
            for _, writer in idle:
                writer.close()
        await asyncio.sleep(0.2)
        assert server.sockets.sockets == 0  # every slot given back


async def test_a_peer_that_sends_pings_and_never_reads_is_dropped_over_tls_too(
    ca: TestCA, tmp_path: Path
) -> None:
    """Over wss the answers pile up in the TLS layer, not the socket (which it stops feeding
    at its high-water mark): the cap counts both, or such a peer grew the server by hundreds
    of MB until the keepalive dropped it 16 s later."""
    cert = ca.issue(tmp_path, "real", ips=["127.0.0.1"])
    config = server_config(tls_cert=cert.cert, tls_key=cert.key, login_timeout=60, ping_interval=60)
    async with serve_signaling(config) as server:
        trust = ssl.create_default_context(cafile=str(ca.cert_path))
        ws = await connect(server.url, ssl=trust, compression=None)
        ws.transport.pause_reading()  # never read again
        ping = Frame(Opcode.PING, b"x" * 125).serialize(mask=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline and not ws.transport.is_closing():
            try:
                ws.transport.write(ping * 500)
            except (ConnectionError, RuntimeError):
                break
            await asyncio.sleep(0)
        assert ws.transport.is_closing(), "the server kept answering pings never read"
        assert loop.time() < deadline


async def test_a_peer_that_closes_as_its_tls_handshake_ends_leaves_no_error_nor_slot(
    ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its last handshake message, an HTTP request and its TLS close in one segment: the end
    of the stream came before websockets was started, which raised inside asyncio (an ERROR
    with a traceback for anyone who connects that way)."""
    cert = ca.issue(tmp_path, "real", ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=cert.cert, tls_key=cert.key)) as server:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        with caplog.at_level(logging.ERROR):
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", server.port))
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if outgoing.pending:
                        await loop.sock_sendall(sock, outgoing.read())
                    incoming.write(await loop.sock_recv(sock, 65536))
            tls.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.unwrap()
            await loop.sock_sendall(sock, outgoing.read())  # all of it in one write
            await asyncio.sleep(0.3)
            sock.close()
            await asyncio.sleep(0.2)
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert server.sockets.sockets == 0


def _bound_socket(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_python_m_signaling_serves_wss(ca: TestCA, tmp_path: Path) -> None:
    cert = ca.issue(tmp_path, "real", dns=["localhost"], ips=["127.0.0.1"])
    env = {
        **os.environ,
        "VOICE_SIGNALING_HTTP_PORT": "0",
        "VOICE_SIGNALING_TLS_CERT": cert.cert,
        "VOICE_SIGNALING_TLS_KEY": cert.key,
    }
    argv = ["--port", "0", "--db", str(tmp_path / "r.sqlite3")]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling", *argv, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = json.loads(await proc.stderr.readline())
                if line["event"] == "listening":
                    break
        assert line["tls"] is True
        stored = (tmp_path / "r.sqlite3.server-id").read_text().strip()
        assert line["server_id"] == stored
        user = make_user("alice")
        client = await SignalingClient.connect(
            f"wss://localhost:{line['port']}", "alice", user.pub, user.sign, ca_file=ca.cert_path
        )
        assert client.server_id == stored
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
