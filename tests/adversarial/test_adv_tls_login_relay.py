"""A hostile server that relays the real server's login challenge cannot log in as its visitor.

Issue 11, point 2. Before login v2 the signature bound only the server's name, the user, the
key and the nonce. A hostile server (say, one whose operator owns a domain and a valid
certificate for it) could open its own connection to the real server, hand the real challenge
to a user who dialed the hostile server, and forward the user's signature: the real server then
logged the *relay* in as that user, and delivered the user's envelopes to it.

Login v2 also signs the RFC 5929 tls-server-end-point hash of the certificate the client saw
and the host it dialed, and the real server accepts only its own certificate hash and host
names. The victim of a relay signs the relay's certificate and host: the real server refuses
the login whether the relay forwards it as it is (``wrong_server``) or rewrites the fields it
sees in clear (``bad_signature``). Each defence has a control that removes it from what is
signed, on both sides, and shows the same relay logged in and receiving the victim's mail.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import signaling.auth
import voice.net.client
from signaling.protocol import login_message
from signaling.server import SignalingServer, serve_signaling
from tests.adversarial.login_relay import LoginRelay
from tests.signaling.helpers import User, make_user, server_config
from tests.support.tls import IssuedCert, TestCA
from voice.errors import (
    InsecureServerUrl,
    LoginRefused,
    RecipientOffline,
    ServerCertificateRejected,
)
from voice.net.client import SignalingClient

MAIL = b"sealed envelope for bob"


@dataclass
class World:
    ca: TestCA
    real: SignalingServer
    real_cert: IssuedCert
    bob: User  # the victim; registered at the real server with his own key
    alice: User

    async def client(self, who: User, url: str, **kw: Any) -> SignalingClient:
        return await SignalingClient.connect(
            url, who.name, who.pub, who.sign, ca_file=self.ca.cert_path, **kw
        )

    async def relay(self, cert: IssuedCert, *, rewrite: bool) -> LoginRelay:
        relay = LoginRelay(self.real.url, cert, str(self.ca.cert_path), rewrite=rewrite)
        return await relay.start()

    async def alice_mails_bob(self) -> str:
        """alice, honestly logged in at the real server, sends bob an envelope."""
        alice = await self.client(self.alice, self.real.url)
        try:
            await alice.send("bob", MAIL)
            return "sent"
        except RecipientOffline:
            return "offline"
        finally:
            await alice.close()


@pytest.fixture
async def world(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """The real server serves wss:// on 127.0.0.1 under a certificate from the CA everyone
    trusts; ``public_host`` (indirect parameter) pins the names it answers to."""
    ca = TestCA.create(tmp_path / "pki")
    real_cert = ca.issue(tmp_path / "pki", "real", dns=["localhost"], ips=["127.0.0.1"])
    public_host = getattr(request, "param", ())
    config = server_config(tls_cert=real_cert.cert, tls_key=real_cert.key, public_host=public_host)
    async with serve_signaling(config) as real:
        w = World(ca, real, real_cert, make_user("bob"), make_user("alice"))
        await (await w.client(w.bob, real.url)).close()  # bob signed up here, honestly
        await (await w.client(w.alice, real.url)).close()
        yield w


def unbound(drop: tuple[str, ...]) -> Callable[..., bytes]:
    """login_message with the fields in ``drop`` taken out of what is signed (the control)."""

    def message(**fields: Any) -> bytes:
        for name in drop:
            fields[name] = "" if name == "host" else b""
        return login_message(**fields)

    return message


def remove_from_signature(monkeypatch: pytest.MonkeyPatch, *drop: str) -> None:
    """Both sides sign and check the same bytes, so the defence is gone, not just one side."""
    monkeypatch.setattr(voice.net.client, "login_message", unbound(drop))
    monkeypatch.setattr(signaling.auth, "login_message", unbound(drop))


# -- a relay with its own valid certificate -------------------------------------------------


@pytest.mark.parametrize(("rewrite", "code"), [(False, "wrong_server"), (True, "bad_signature")])
async def test_a_relay_with_its_own_certificate_cannot_log_in_as_its_visitor(
    world: World, tmp_path: Path, rewrite: bool, code: str
) -> None:
    own = world.ca.issue(tmp_path / "pki", "relay", dns=["localhost"])  # valid, for its name
    relay = await world.relay(own, rewrite=rewrite)
    try:
        with pytest.raises(LoginRefused) as refused:
            await world.client(world.bob, relay.url)  # bob dials the relay
        assert refused.value.code == code
        # bob signed what he saw: the relay's certificate and host, and the real challenge
        seen = relay.logins_seen[0]
        assert seen["host"] == "localhost"
        assert seen["binding"] == _b64(signaling.auth.tls_server_end_point(own.der))
        assert seen["binding"] != _b64(world.real.identity.binding)
        assert [(a["type"], a["code"]) for a in relay.answers] == [("error", code)]
        # the real server never let the relay in as bob: bob's mail goes nowhere
        assert world.real.router.presence.lookup("bob") is None
        assert await world.alice_mails_bob() == "offline"
        assert relay.stolen == []
    finally:
        await relay.close()


async def test_control_without_the_binding_the_same_relay_logs_in_as_its_visitor(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_from_signature(monkeypatch, "host", "binding")  # login v1 semantics
    own = world.ca.issue(tmp_path / "pki", "relay", dns=["localhost"])
    relay = await world.relay(own, rewrite=True)
    try:
        victim = await world.client(world.bob, relay.url)  # "logged in": the relay said welcome
        assert relay.answers[0]["type"] == "welcome"
        assert world.real.router.presence.lookup("bob") is not None  # the relay's session
        assert await world.alice_mails_bob() == "sent"
        await _until(lambda: bool(relay.stolen))
        assert relay.stolen[0]["type"] == "deliver" and relay.stolen[0]["from"] == "alice"
        assert relay.stolen[0]["body"] == _b64(MAIL)  # bob's envelope, delivered to the relay
        await victim.close()
    finally:
        await relay.close()


# -- a relay that presents the real server's own certificate (a shared or wildcard one) ------


@pytest.mark.parametrize("world", [("127.0.0.1",)], indirect=True)
@pytest.mark.parametrize(("rewrite", "code"), [(False, "wrong_server"), (True, "bad_signature")])
async def test_a_relay_sharing_the_real_certificate_is_stopped_by_the_host(
    world: World, rewrite: bool, code: str
) -> None:
    """The real server answers to 127.0.0.1 only (``--public-host``); its certificate also
    names localhost, where the relay sits with the very same certificate and key."""
    relay = await world.relay(world.real_cert, rewrite=rewrite)
    try:
        with pytest.raises(LoginRefused) as refused:
            await world.client(world.bob, relay.url)
        assert refused.value.code == code
        assert relay.logins_seen[0]["binding"] == _b64(world.real.identity.binding)  # same cert
        assert relay.logins_seen[0]["host"] == "localhost"
        assert await world.alice_mails_bob() == "offline" and relay.stolen == []
    finally:
        await relay.close()


@pytest.mark.parametrize("world", [("127.0.0.1",)], indirect=True)
async def test_control_without_the_host_the_shared_certificate_relay_logs_in(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_from_signature(monkeypatch, "host")  # the certificate hash is still signed
    relay = await world.relay(world.real_cert, rewrite=True)
    try:
        victim = await world.client(world.bob, relay.url)
        assert await world.alice_mails_bob() == "sent"
        await _until(lambda: bool(relay.stolen))
        assert relay.stolen[0]["body"] == _b64(MAIL)
        await victim.close()
    finally:
        await relay.close()


# -- servers the client does not trust get nothing at all ------------------------------------


@pytest.mark.parametrize("flaw", ["untrusted_ca", "expired", "other_name"])
async def test_a_relay_without_a_valid_certificate_for_the_dialed_name_gets_no_frame(
    world: World, tmp_path: Path, flaw: str
) -> None:
    pki = tmp_path / "pki"
    cert = {
        "untrusted_ca": lambda: TestCA.create(pki, "rogue").issue(pki, "r1", dns=["localhost"]),
        "expired": lambda: world.ca.issue(pki, "r2", dns=["localhost"], expired=True),
        "other_name": lambda: world.ca.issue(pki, "r3", dns=["relay.example"]),
    }[flaw]()
    relay = await world.relay(cert, rewrite=True)
    try:
        with pytest.raises(ServerCertificateRejected):
            await world.client(world.bob, relay.url)
        assert relay.frames_in == 0 and relay.answers == []  # nothing signed, nothing sent
    finally:
        await relay.close()


async def test_plain_ws_to_a_remote_host_is_refused_before_connecting() -> None:
    """TLS cannot be stripped to reach a remote server in clear: ws:// to a host that is not
    loopback is refused unless the user passed --insecure (TEST-NET address: never reached)."""
    bob = make_user("bob")
    with pytest.raises(InsecureServerUrl):
        await SignalingClient.connect("ws://203.0.113.7:8765", "bob", bob.pub, bob.sign)
    with pytest.raises(InsecureServerUrl):
        await SignalingClient.connect("ws://signaling.example:8765", "bob", bob.pub, bob.sign)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
