"""The bus's own Redis connection against a real redis-server: replies in order, an error reply
failing only its command, a subscription's messages, logging in with a password and a
database from the URL, TLS with the server's certificate verified, and every way a
connection ends failing what waits instead of hanging."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.errors import RedisUnavailable
from signaling.redisconn import RedisAddress, RedisConnection, closed, connect, parse_url
from tests.signaling.cluster_helpers import RedisServer
from tests.support.processes import stop_process
from tests.support.signalingd import free_port
from tests.support.tls import TestCA

pytestmark = pytest.mark.timeout(30)
WAIT = 5.0


@pytest.fixture
async def conn(redis: RedisServer) -> AsyncIterator[RedisConnection]:
    made = await connect(parse_url(redis.url), WAIT)
    yield made
    await closed(made)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("unix:///run/r.sock", RedisAddress(path="/run/r.sock")),
        ("unix://:p%40ss@/r.sock?db=2", RedisAddress(path="/r.sock", password="p@ss", db=2)),
        ("redis://redis:6379/0", RedisAddress(host="redis")),
        ("redis://u:pw@10.0.0.5:7000/3", RedisAddress("10.0.0.5", 7000, "", False, "u", "pw", 3)),
        ("rediss://cache.example", RedisAddress(host="cache.example", tls=True)),
    ],
)
def test_a_url_says_where_redis_is_and_how_to_log_in(url: str, address: RedisAddress) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize(
    "url",
    [
        "http://redis:6379",
        "unix://",
        "redis:///0",  # no host
        "redis://redis/x",  # a database that is not a number
        "redis://redis/1?db=2",  # two databases
        "unix:///r.sock?timeout=3",  # a parameter we would silently ignore
        "redis://redis:99999",
        "unix://var/run/redis.sock",  # two slashes: "var" would be a host, silently dropped
        "redis://someone@redis:6379",  # a user without a password would log in as default
    ],
)
def test_a_url_we_cannot_follow_is_refused_before_connecting(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://default:s3cr/et@redis:6379",  # "/" unencoded: urllib reads "s3cr" as a port
        "redis://default:s3cr?et@redis",  # "?" unencoded: the rest reads as a query
        "redis://default:s3cr#et@redis:6379",
    ],
)
def test_a_refused_url_never_repeats_its_password(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_url(url)
    assert "s3cr" not in str(refused.value) and "et@" not in str(refused.value)
    assert "percent-encoded" in str(refused.value)  # and says how to write it


def test_the_password_is_decoded_and_kept_out_of_the_address_repr() -> None:
    address = parse_url("unix://:s3cr%2Fet@/run/my%20redis.sock")
    assert (address.password, address.path) == ("s3cr/et", "/run/my redis.sock")
    assert "s3cr" not in repr(address)


async def test_pipelined_replies_come_in_order_and_an_error_fails_only_its_command(
    conn: RedisConnection,
) -> None:
    replies = [conn.call("INCR", "n") for _ in range(300)]
    failing = conn.call("INCRBY", "n", "not-a-number")
    replies += [conn.call("INCR", "n") for _ in range(300)]
    assert await asyncio.gather(*replies) == list(range(1, 601))
    with pytest.raises(RedisUnavailable, match="not an integer"):
        await failing
    assert await conn.call("GET", "n") == b"600"  # the connection goes on


async def test_a_subscription_hands_over_each_message_whole(
    redis: RedisServer, conn: RedisConnection
) -> None:
    got: list[bytes] = []
    sub = await connect(parse_url(redis.url), WAIT, on_message=got.append)
    try:
        assert await sub.call("SUBSCRIBE", "ch") == [b"subscribe", b"ch", 1]
        payloads = [b"v2 A\ne1 bob alice {}", b"\r\n$3\r\n", b"x" * 200_000, b""]
        for payload in payloads:
            assert await conn.call("PUBLISH", "ch", payload) == 1
        assert await sub.call("PING") == [b"pong", b""]  # answered after what came before
        assert got == payloads
    finally:
        await closed(sub)


async def test_a_password_and_a_database_come_from_the_url(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start(["--requirepass", "s3cret"])
    try:
        url = f"unix://:s3cret@{redis.socket}?db=3"
        conn = await connect(parse_url(url), WAIT)
        try:
            assert await conn.call("SET", "k", "in three") == b"OK"
        finally:
            await closed(conn)
        in_three = redis.command("-a", "s3cret", "-n", "3", "GET", "k")
        assert in_three.strip() == b"in three"
        with pytest.raises(RedisUnavailable, match="WRONGPASS"):
            await connect(parse_url(f"unix://:wrong@{redis.socket}"), WAIT)
        anonymous = await connect(parse_url(f"unix://{redis.socket}"), WAIT)
        try:
            with pytest.raises(RedisUnavailable, match="NOAUTH"):
                await anonymous.call("GET", "k")
        finally:
            await closed(anonymous)
    finally:
        redis.stop()


async def test_redis_going_away_fails_what_waits_and_what_comes_after(
    redis: RedisServer, conn: RedisConnection
) -> None:
    waiting = conn.call("BLPOP", "nothing", "0")  # answered only when the list gets an item
    await asyncio.sleep(0.1)
    redis.stop()
    with pytest.raises(RedisUnavailable):
        await asyncio.wait_for(waiting, WAIT)
    await asyncio.wait_for(conn.closed, WAIT)
    with pytest.raises(RedisUnavailable):
        conn.call("PING")  # at once, not queued


async def _fake_redis(path: Path, sends: bytes) -> asyncio.Server:
    """A server on ``path`` that answers the first PING with ``sends``, then only listens."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"PING\r\n")
        writer.write(sends)
        await reader.read()  # until the client closes
        writer.close()

    return await asyncio.start_unix_server(answer, str(path))


async def test_a_stream_that_is_not_resp_closes_the_connection(tmp_path: Path) -> None:
    server = await _fake_redis(tmp_path / "fake.sock", b"!3\r\nabc\r\n")
    try:
        conn = await connect(parse_url(f"unix://{tmp_path / 'fake.sock'}"), WAIT)
        with pytest.raises(RedisUnavailable, match="broken stream"):
            await asyncio.wait_for(conn.call("PING"), WAIT)
        await asyncio.wait_for(conn.closed, WAIT)
    finally:
        server.close()


async def test_a_reply_nobody_asked_for_closes_the_connection(tmp_path: Path) -> None:
    server = await _fake_redis(tmp_path / "fake.sock", b"+PONG\r\n+PONG\r\n")
    try:
        conn = await connect(parse_url(f"unix://{tmp_path / 'fake.sock'}"), WAIT)
        assert await asyncio.wait_for(conn.call("PING"), WAIT) == b"PONG"
        await asyncio.wait_for(conn.closed, WAIT)  # replies out of step: trust none after
        with pytest.raises(RedisUnavailable, match="nobody asked"):
            conn.call("PING")
    finally:
        server.close()


async def test_a_connection_to_a_redis_that_never_answers_times_out(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start(["--requirepass", "s3cret"])
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGSTOP)  # accepts connections (the kernel), never answers
    try:
        with pytest.raises(TimeoutError):
            await connect(parse_url(f"unix://:s3cret@{redis.socket}"), 0.5)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
        redis.stop()


class TlsRedis:
    """redis-server on TLS only, with a certificate for ``names`` (``localhost``) from a
    test CA."""

    def __init__(self, tmp_path: Path, names: list[str] | None = None) -> None:
        self.ca = TestCA.create(tmp_path)
        cert = self.ca.issue(tmp_path, "redis", dns=names or ["localhost"])
        for _ in range(20):  # the port is free when we look; another process may take it
            self.port = free_port()
            args = ["redis-server", "--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", cert.cert, "--tls-key-file", cert.key]
            args += ["--tls-ca-cert-file", str(self.ca.cert_path), "--tls-auth-clients", "no"]
            args += ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
            if _listening(self.port, self.proc):
                return
            stop_process(self.proc)
        raise RuntimeError("redis-server with TLS did not start")


def _listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    for _ in range(200):
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.025)
    return False


async def test_tls_refuses_a_certificate_for_another_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = TlsRedis(tmp_path, names=["cache.example.org"])  # trusted CA, another name
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca.cert_path))
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await connect(parse_url(f"rediss://localhost:{server.port}"), WAIT)
    finally:
        stop_process(server.proc)


async def test_tls_verifies_the_redis_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = TlsRedis(tmp_path)
    try:
        url = f"rediss://localhost:{server.port}"
        # An instance that does not trust the CA refuses the server (a man in the middle).
        monkeypatch.setenv("SSL_CERT_FILE", os.devnull)
        monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-certs"))
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(parse_url(url), WAIT)
        # One that trusts it talks TLS to it.
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca.cert_path))
        conn = await connect(parse_url(url), WAIT)
        try:
            assert await conn.call("PING") == b"PONG"
        finally:
            await closed(conn)
    finally:
        stop_process(server.proc)
