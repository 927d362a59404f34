"""Key directory: ``lookup`` -> ``key`` (or ``unknown_user``), in the parser, router and server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.errors import FrameError
from signaling.messages import Key, Lookup
from signaling.protocol import ErrorCode, encode, parse_client_frame, parse_server_frame
from signaling.registry import MemoryRegistry, SQLiteRegistry
from signaling.server import SignalingServer, serve_signaling
from tests.signaling.helpers import make_user, server_config, url_of
from tests.signaling.test_signaling_router import frames, login, make_router
from voice.errors import UnknownUser


def lookup(user: object, msg_id: object = "q1") -> str:
    return json.dumps({"v": 1, "type": "lookup", "id": msg_id, "user": user})


def test_lookup_and_key_frames_parse_and_round_trip() -> None:
    assert parse_client_frame(lookup("bob")) == Lookup("q1", "bob")
    key = Key("q1", "bob", b"k" * 32)
    assert parse_server_frame(encode(key)) == key
    assert json.loads(encode(key))["key"] == base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (lookup("Bob"), ErrorCode.BAD_USERNAME),
        (lookup(["bob"]), ErrorCode.BAD_TYPE),
        (lookup("bob", msg_id=""), ErrorCode.BAD_ID),
        (json.dumps({"v": 1, "type": "lookup", "id": "1"}), ErrorCode.MISSING_FIELD),
        (json.dumps({"v": 1, "type": "lookup", "id": "1", "user": "bob", "x": 1}), "extra_field"),
        (encode(Key("1", "bob", b"k" * 32)), ErrorCode.UNKNOWN_TYPE),  # server-only frame
    ],
)
def test_malformed_lookups_have_their_code(data: str, code: str) -> None:
    with pytest.raises(FrameError) as err:
        parse_client_frame(data)
    assert err.value.code == code


def test_a_server_key_frame_with_a_short_key_is_refused() -> None:
    frame = {"v": 1, "type": "key", "id": "1", "user": "bob", "key": "AAAA"}
    with pytest.raises(FrameError):
        parse_server_frame(json.dumps(frame))


def test_router_answers_the_owner_key_or_unknown_user_and_needs_a_login() -> None:
    router = make_router()
    a, _ = login(router, "alice"), login(router, "bob")
    answer = frames(router.receive(a, lookup("bob")), a)
    bob_key = base64.b64encode(make_user("bob", seed=3).pub).decode()
    assert answer == [{"v": 1, "type": "key", "id": "q1", "user": "bob", "key": bob_key}]
    missing = frames(router.receive(a, lookup("carol", "q2")), a)
    assert [(f["code"], f["id"]) for f in missing] == [("unknown_user", "q2")]
    sid, _ = router.connect("10.0.0.9")
    early = frames(router.receive(sid, lookup("bob")), sid)
    assert [(f["type"], f.get("code")) for f in early] == [("error", "not_logged_in")]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_registry_key_of(kind: str, tmp_path: Path) -> None:
    registry = MemoryRegistry() if kind == "memory" else SQLiteRegistry(tmp_path / "r.db")
    assert registry.key_of("bob") is None
    assert registry.claim("bob", b"B" * 32)
    assert registry.key_of("bob") == b"B" * 32
    registry.close()


@pytest.fixture
async def server() -> AsyncIterator[SignalingServer]:
    async with serve_signaling(server_config()) as s:
        yield s


async def test_client_lookup_returns_the_registered_key(server: SignalingServer) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    a = await alice.connect(url_of(server))
    b = await bob.connect(url_of(server))
    try:
        assert await a.lookup("bob") == bob.pub
        assert await b.lookup("alice") == alice.pub
        await b.close()
        assert await a.lookup("bob") == bob.pub  # registered but offline: still known
        with pytest.raises(UnknownUser):
            await a.lookup("nobody")
    finally:
        await a.close()
        await b.close()
