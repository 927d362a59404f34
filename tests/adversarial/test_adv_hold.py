"""Hold and resume against a malicious server and forgers, with real phones.

The server replays a real ``hold`` after the ``resume``, and swaps a real hold and resume in
flight (the replay guard takes an envelope up to 64 places out of order: the hold epoch must
refuse it). Others send holds for a call they are not in, for a call that does not exist, under
a stolen identity key, under the call's key before the call connected. Every one is refused
with a reason the phone counts; the call stays connected, unheld, and its audio flows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import Behaviour, Envelope, running_server
from tests.adversarial.phones import Person, audio_flows, connect_call, kind_of, two_phones
from voice.call import messages as m
from voice.call.events import HoldState, State
from voice.crypto.callenvelope import seal_call
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.errors import CallControlError
from voice.phone import Call

SEQ = 40  # above any seq an honest phone used in these calls, within the replay window


class HoldBack(Behaviour):
    """Honest, except that while ``holding`` it keeps alice's envelopes to deliver later."""

    def __init__(self) -> None:
        self.holding = False
        self.kept: list[Envelope] = []

    async def on_send(self, envelope: Envelope) -> None:
        if self.holding and envelope.sender == "alice":
            self.kept.append(envelope)
        else:
            await super().on_send(envelope)


async def settled(call: Call, hold: HoldState, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while call.hold_state != hold:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_replayed_or_reordered_hold_cannot_put_the_call_back_on_hold(
    tmp_path: Path,
) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    behaviour = HoldBack()
    async with running_server(behaviour) as server, two_phones(server.url, alice, bob) as (pa, pb):
        a, b = await connect_call(pa, pb, "bob")
        # A real hold reaches bob; the server keeps a copy and replays it after the resume.
        await a.hold()
        await settled(b, HoldState(remote=True))
        hold = server.envelopes_from("alice")[-1]
        assert kind_of(bob, hold.body) == "hold"
        await a.resume()
        await settled(b, HoldState())
        before = Counter(pb.dropped)
        await server.deliver("bob", "alice", hold.body)
        await asyncio.sleep(0.3)
        assert pb.dropped - before == Counter(bad_envelope=1)  # the replay guard
        assert b.hold_state == HoldState()
        # The server holds back a hold and the resume after it, and delivers them swapped.
        behaviour.holding = True
        await a.hold()
        await a.resume()
        async with asyncio.timeout(5):
            while len(behaviour.kept) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        behaviour.holding = False
        held, resumed = behaviour.kept
        rejected = pb.dropped["rejected"]
        assert [kind_of(bob, e.body) for e in (held, resumed)] == ["hold", "resume"]
        await server.deliver("bob", "alice", resumed.body)
        await server.deliver("bob", "alice", held.body)  # passes the replay guard ...
        await asyncio.sleep(0.3)
        assert pb.dropped["rejected"] == rejected + 1  # ... but its epoch is stale
        assert b.hold_state == HoldState() and not b.on_hold
        assert a.state is b.state is State.CONNECTED
        assert await audio_flows(a) and await audio_flows(b)


async def test_holds_from_outside_the_call_are_refused(tmp_path: Path) -> None:
    alice, bob, carol = (Person.make(n, tmp_path) for n in ("alice", "bob", "carol"))
    bob.contacts.check("carol", carol.identity.public_key)  # someone bob knows
    async with running_server() as server, two_phones(server.url, alice, bob) as (pa, pb):
        a, b = await connect_call(pa, pb, "bob")
        hold = m.encode(m.Hold(1))
        before = Counter(pb.dropped)

        def sealed_by(who: Person, call_id: bytes) -> bytes:
            header = EnvelopeHeader(call_id, SEQ, now_ms())
            return seal(who.identity, bob.identity.public_key, header, hold)

        # carol, not in the call, under her own name and under alice's
        await server.deliver("bob", "carol", sealed_by(carol, a.call_id))
        await server.deliver("bob", "alice", sealed_by(carol, a.call_id))
        # alice's identity key (a thief's), for a call that does not exist, and for this one
        await server.deliver("bob", "alice", sealed_by(alice, b"\x5a" * 16))
        await server.deliver("bob", "alice", sealed_by(alice, a.call_id))
        # a call envelope under a key nobody has
        fake = seal_call(bytes(32), EnvelopeHeader(a.call_id, SEQ, now_ms()), hold)
        await server.deliver("bob", "alice", fake)
        await asyncio.sleep(0.3)
        assert pb.dropped - before == Counter(
            call_belongs_to_another_peer=1,
            key_changed=1,  # and bob is warned: another key under alice's name
            unknown_call_id=1,
            identity_sealed=1,
            bad_envelope=1,
        )
        assert (await pb.next_warning(timeout=5)).user == "alice"
        assert b.hold_state == HoldState() and b.state is State.CONNECTED
        assert await audio_flows(b)
        await a.hold()  # alice herself still can
        await settled(b, HoldState(remote=True))


async def test_a_hold_before_the_call_connected_is_refused(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with running_server() as server, two_phones(server.url, alice, bob) as (pa, pb):
        out = await pa.call("bob")
        inc = await pb.incoming(timeout=10)
        for call in (out, inc):  # the user's side: a clear error, nothing sent
            with pytest.raises(CallControlError, match="only a connected call"):
                await call.hold()
        async with asyncio.timeout(10):  # bob's key agreement ran: alice's call key exists
            while inc.call_id not in bob.keys.envelope_rx:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        key = bob.keys.envelope_rx[inc.call_id]  # what alice's phone seals with
        early = seal_call(key, EnvelopeHeader(inc.call_id, SEQ, now_ms()), m.encode(m.Hold(1)))
        rejected = pb.dropped["rejected"]
        await server.deliver("bob", "alice", early)
        await asyncio.sleep(0.3)
        assert pb.dropped["rejected"] == rejected + 1  # opened, fresh, from alice; refused
        assert inc.state is State.RINGING_IN and inc.hold_state == HoldState()
        await inc.accept()
        await asyncio.gather(out.wait_connected(timeout=10), inc.wait_connected(timeout=10))
        assert not inc.on_hold and not out.on_hold and await audio_flows(inc)
