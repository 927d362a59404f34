"""Attack 5: hypothesis fuzz of the phone's handling of envelopes and session descriptions.

Real phones on the malicious server, which delivers whatever hypothesis makes: bit flips of real
envelopes, random bytes, valid envelopes (from third parties) holding random payloads, malformed
call messages, and offers whose session descriptions are random or mutated real ones. Two
targets: ``alice`` while in a connected call with ``bob`` (the call must be unaffected), and an
idle ``carol`` that actually parses the descriptions (offers make her prepare media and connect).
The asyncio world runs on its own thread; each example waits until the phone has visibly
handled the delivery (a drop counter, a new call, or a reply). Afterwards: the call is still
connected with audio flowing, nothing is stuck, and each phone completes a brand new call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial.malicious_server import MaliciousServer, running_server
from tests.adversarial.phones import Person, audio_flows, connect_call
from voice.call import messages as m
from voice.call.events import State
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.errors import BadCallMessage
from voice.phone import Call, Phone

# The phones under test run on their own thread and use the global ``random`` module (aioice
# jitters its ICE consent checks with it) while Hypothesis draws; Hypothesis notices the global
# state moving and warns. The draws do not use ``random``, so the warning is noise here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

T = TypeVar("T")
IN_CALL_EXAMPLES = 1_400
DESCRIPTION_EXAMPLES = 700
FAST = {
    "no_answer_timeout": 2.0,
    "ring_grace": 0.5,
    "connect_timeout": 2.0,
    "ice_timeout": 1.0,
    "media_timeout": 5.0,
}


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    server: MaliciousServer
    phones: dict[str, Phone]
    people: dict[str, Person]
    call: tuple[Call, Call]
    description: dict[str, Any]
    senders: list[Identity]
    delivered: int = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def progress(self, user: str) -> int:
        p = self.phones[user]
        return sum(p.dropped.values()) + len(p.calls) + len(self.server.envelopes_from(user))

    def inject(self, to: str, from_user: str, body: bytes) -> None:
        """Deliver one body and wait until the phone has handled it."""

        async def go() -> None:
            before = self.progress(to)
            await self.server.deliver(to, from_user, body)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20  # a bound on waiting, not a timing claim
            while self.progress(to) == before:
                assert loop.time() < deadline, "the phone did not handle a delivery"
                await asyncio.sleep(0.0005)

        self.run(go())
        self.delivered += 1

    def sender(self) -> Identity:
        """A third party's identity; a fresh one every 50 calls (the replay guard caps calls
        per sender at 64, and a capped sender would only test the cap)."""
        if self.delivered % 50 == 0 or not self.senders:
            self.senders.append(Identity.generate())
        return self.senders[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home: Path = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    people = {n: Person.make(n, home) for n in ("alice", "bob", "carol")}
    stack: dict[str, Any] = {}

    async def setup() -> World:
        cm = running_server()
        server = await cm.__aenter__()
        stack["server"] = cm
        phones = {
            n: await Phone.connect(p.config(server.url, **FAST), audio=_audio)
            for n, p in people.items()
        }
        a, b = await connect_call(phones["alice"], phones["bob"], "bob")
        media = a.media_stats()
        assert media is not None
        return World(loop, server, phones, people, (a, b), _description(a), [])

    w = asyncio.run_coroutine_threadsafe(setup(), loop).result(30)
    yield w

    async def teardown() -> None:
        for p in w.phones.values():
            await p.close()
        await stack["server"].__aexit__(None, None, None)

    asyncio.run_coroutine_threadsafe(teardown(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _audio(call: Call) -> Any:
    from voice.audio.sinks import NullSink
    from voice.audio.sources import ToneSource

    return ToneSource(), NullSink()


def _description(call: Call) -> dict[str, Any]:
    session = call._media.session
    assert session is not None
    return session.local_description()


# ---- strategies ---------------------------------------------------------------------------

# Sequence numbers over the whole uint64 range, weighted to the window edges and extremes.
SEQ = (
    st.integers(0, 1_000)
    | st.integers(0, 2**64 - 1)
    | st.sampled_from([63, 64, 65, 2**30, 2**40, 2**62, 2**63, 2**64 - 1])
)

json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated_description(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    desc: dict[str, Any] = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["top", "ice", "codec", "candidate"]))
        value = draw(json_value)
        if where == "top":
            key = draw(st.sampled_from(["ice", "ssrc", "codec", "extra"]))
            if draw(st.booleans()):
                desc.pop(key, None)
            else:
                desc[key] = value
        elif where in ("ice", "codec") and isinstance(desc.get(where), dict):
            sub = desc[where]
            key = draw(st.sampled_from([*sub.keys(), "x"]))
            sub[key] = value if draw(st.booleans()) else draw(st.text(max_size=300))
        elif isinstance(desc.get("ice"), dict) and isinstance(desc["ice"].get("candidates"), list):
            cands = desc["ice"]["candidates"]
            text = draw(st.text(max_size=120)) if draw(st.booleans()) else _cand_variant(draw)
            cands.append(text) if draw(st.booleans()) else cands.insert(0, text)
    return desc


def _cand_variant(draw: st.DrawFn) -> str:
    ip = draw(st.sampled_from(["127.0.0.1", "::1", "10.0.0.1", "localhost", "999.1.1.1", ""]))
    port = draw(st.integers(-5, 70_000))
    kind = draw(st.sampled_from(["host", "srflx", "relay", "prflx", "bogus"]))
    comp = draw(st.integers(0, 3))
    return f"abc {comp} udp 2130706431 {ip} {port} typ {kind}"


def message_bytes(draw: st.DrawFn, description: dict[str, Any]) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        obj = draw(st.dictionaries(st.text(max_size=12), json_value, max_size=5))
        obj.setdefault("v", draw(st.sampled_from([1, 2, "1", None])))
        obj.setdefault("type", draw(st.sampled_from([*m.MESSAGE_TYPES, "x"])))
        return json.dumps(obj).encode()
    if kind == 2:  # right type, wrong fields or values
        t = draw(st.sampled_from(list(m.MESSAGE_TYPES)))
        obj = {"v": 1, "type": t}
        for f in ("commitment", "eph_a", "eph_b", "continuity_a", "continuity_b", "reason"):
            if draw(st.booleans()):
                raw = draw(st.binary(max_size=70))
                obj[f] = base64.b64encode(raw).decode() if draw(st.booleans()) else draw(json_value)
        if draw(st.booleans()):
            obj["description"] = draw(mutated_description(description))
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    if kind == 3:  # a valid message of any kind
        valid: list[m.Message] = [
            m.Accept(),
            m.Hangup(),
            m.Cancel(),
            m.Busy(),
            m.Decline(),
            m.CallError("x"),
        ]
        return m.encode(draw(st.sampled_from(valid)))
    return m.encode(m.Offer(os.urandom(32), description))


@st.composite
def delivery_for_alice(draw: st.DrawFn, w: World) -> tuple[str, bytes, Identity | None]:
    """(from, body, sealer): what the server delivers to alice during her call."""
    kind = draw(st.integers(0, 3))
    alice_key = w.people["alice"].identity.public_key
    if kind == 0:  # bit flips of a real envelope bob sent to alice
        real = [e.body for e in w.server.envelopes if e.to == "alice"]
        body = bytearray(draw(st.sampled_from(real)))
        for bit in draw(st.lists(st.integers(0, len(body) * 8 - 1), min_size=1, max_size=8)):
            body[bit // 8] ^= 1 << (bit % 8)
        return "bob", bytes(body), None
    if kind == 1:  # random bytes, as bob or as a stranger
        return draw(st.sampled_from(["bob", "mallory"])), draw(st.binary(max_size=600)), None
    sealer = w.sender()
    call_id = draw(st.sampled_from([w.call[0].call_id, os.urandom(16)]))
    header = EnvelopeHeader(call_id, draw(SEQ), int(time.time() * 1000))
    payload = message_bytes(draw, w.description)
    name = f"mallory{len(w.senders)}"
    return name, seal(sealer, alice_key, header, payload), sealer


# ---- the properties -----------------------------------------------------------------------


@settings(
    max_examples=IN_CALL_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(data=st.data())
def test_fuzzed_deliveries_leave_the_call_in_progress_alone(
    world: World, data: st.DataObject
) -> None:
    from_user, body, _ = data.draw(delivery_for_alice(world))
    world.inject("alice", from_user, body)
    a, b = world.call
    assert a.state is State.CONNECTED and b.state is State.CONNECTED
    assert world.phones["alice"].dropped["internal"] == 0


@settings(
    max_examples=DESCRIPTION_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(data=st.data())
def test_fuzzed_session_descriptions_are_refused_cleanly(world: World, data: st.DataObject) -> None:
    desc = data.draw(
        mutated_description(world.description)
        | st.dictionaries(st.text(max_size=8), json_value, max_size=4)
    )
    sealer = world.sender()
    header = EnvelopeHeader(os.urandom(16), 0, int(time.time() * 1000))
    try:
        payload = m.encode(m.Offer(os.urandom(32), desc))
    except BadCallMessage:
        payload = json.dumps({"v": 1, "type": "offer", "description": desc}, default=str).encode()
    carol_key = world.people["carol"].identity.public_key
    world.inject("carol", f"mallory{len(world.senders)}", seal(sealer, carol_key, header, payload))
    assert world.phones["carol"].dropped["internal"] == 0


def test_after_the_fuzz_everything_still_works(world: World) -> None:
    """Runs last in this module: the fuzzed phones are intact and place new calls."""

    async def check() -> None:
        a, b = world.call
        assert a.state is State.CONNECTED and b.state is State.CONNECTED
        assert await audio_flows(a) and await audio_flows(b)
        carol = world.phones["carol"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while any(not c.state.terminal for c in carol.calls):  # fuzz calls end by themselves
            assert loop.time() < deadline, "a fuzzed call never ended"
            await asyncio.sleep(0.1)
        await a.hangup()
        await b.wait_ended(timeout=10)
        a2, b2 = await connect_call(world.phones["alice"], world.phones["bob"], "bob")
        assert a2.sas == b2.sas and await audio_flows(a2)
        await a2.hangup()
        await b2.wait_ended(timeout=10)
        c3, a3 = await connect_call(carol, world.phones["alice"], "alice")
        assert c3.sas == a3.sas and await audio_flows(c3)
        await c3.hangup()
        for p in world.phones.values():
            assert p.dropped["internal"] == 0

    world.run(check(), timeout=90)
    counts = {u: dict(p.dropped) for u, p in world.phones.items()}
    print(f"fuzz: {world.delivered} deliveries; drops by reason: {counts}")
    assert world.delivered >= IN_CALL_EXAMPLES + DESCRIPTION_EXAMPLES
