"""Attacks 1.3 (replay) and 1.5 (forged sender), by the malicious server against real phones.

The server records every envelope of a real call and re-delivers them later: within the same
call, after it ended, and minutes later to a restarted phone (clock injected minutes ahead, so
the replay guard's memory is gone and only the age check stands). It also forges envelopes:
another key under a pinned user's name, a tampered outer sender, a reflected envelope.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.adversarial.malicious_server import Envelope, MaliciousServer, running_server
from tests.adversarial.phones import (
    Person,
    audio_flows,
    connect_call,
    kind_of,
    nothing_rings,
    phone,
    two_phones,
)
from voice.call import messages as m
from voice.call.events import State
from voice.crypto.contacts import TrustState
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.phone import Phone

MINUTES_LATER = 5 * 60.0


def labelled(server: MaliciousServer, to: Person) -> dict[str, Envelope]:
    """The envelopes sent to ``to``, keyed by the call message inside (first of each kind)."""
    out: dict[str, Envelope] = {}
    for e in server.envelopes:
        if e.to == to.name:
            out.setdefault(kind_of(to, e.body), e)
    return out


def refused(p: Phone) -> int:
    return p.dropped["bad_envelope"] + p.dropped["identity_sealed"]


async def test_replays_within_the_call_and_after_it_are_refused(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with running_server() as server, two_phones(server.url, alice, bob) as (pa, pb):
        a, b = await connect_call(pa, pb, "bob")
        to_bob, to_alice = labelled(server, bob), labelled(server, alice)
        assert {"offer", "reveal"} <= set(to_bob) and {"ringing", "accept"} <= set(to_alice)
        calls_a, calls_b = len(pa.calls), len(pb.calls)
        sent_by_bob = len(server.envelopes_from("bob"))
        # Within the same call: every setup message again, twice.
        for _ in range(2):
            for e in (to_bob["offer"], to_bob["reveal"]):
                await server.deliver("bob", "alice", e.body)
            for e in (to_alice["ringing"], to_alice["accept"]):
                await server.deliver("alice", "bob", e.body)
        assert await nothing_rings(pb, 0.5)
        # Refused as replays, or (set-up messages under the identity key, in a connected call)
        # as identity-sealed envelopes the peer no longer uses.
        assert refused(pb) == 4 and refused(pa) == 4
        assert len(server.envelopes_from("bob")) == sent_by_bob  # not even a "busy"
        assert (len(pa.calls), len(pb.calls)) == (calls_a, calls_b)
        assert a.state is State.CONNECTED and b.state is State.CONNECTED
        assert await audio_flows(a) and await audio_flows(b)
        await a.hangup()
        await b.wait_ended(timeout=10)
        # After the call: the offer again (within max_age: the guard still remembers it).
        await server.deliver("bob", "alice", to_bob["offer"].body)
        assert await nothing_rings(pb, 0.5)
        assert refused(pb) == 5
    print("replays refused in-call: 8 (4 per phone); after the call: 1")


async def test_replays_minutes_later_to_restarted_phones_are_refused(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with running_server() as server:
        async with two_phones(server.url, alice, bob) as (pa, pb):
            a, b = await connect_call(pa, pb, "bob")
            await a.hangup()
            await b.wait_ended(timeout=10)
        old_to_bob, old_to_alice = labelled(server, bob), labelled(server, alice)

        def later() -> float:
            return time.time() + MINUTES_LATER

        # Both phones restart minutes later: no replay memory, only the age check is left.
        async with two_phones(server.url, alice, bob, clock=later) as (pa, pb):
            for e in old_to_bob.values():
                await server.deliver("bob", "alice", e.body)
            assert await nothing_rings(pb, 0.5)
            assert pb.calls == [] and pb.dropped["bad_envelope"] == len(old_to_bob)
            # A new call rings; old ringing/accept replayed into it change nothing.
            a2 = await pa.call("bob")
            b2 = await pb.incoming(timeout=5)
            for e in old_to_alice.values():
                await server.deliver("alice", "bob", e.body)
            await asyncio.sleep(0.5)
            assert a2.state is State.RINGING_OUT and a2.sas is None
            assert pa.dropped["bad_envelope"] == len(old_to_alice)
            # The same old envelopes, under the new call's clock, are still too old to open.
            await b2.decline()
            await a2.wait_ended(timeout=5)
    print(f"minutes-later replays refused: {len(old_to_bob)} to bob, {len(old_to_alice)} to alice")


async def _pinned_pair(server: MaliciousServer, alice: Person, bob: Person) -> None:
    async with two_phones(server.url, alice, bob) as (pa, pb):
        a, b = await connect_call(pa, pb, "bob")
        await a.hangup()
        await b.wait_ended(timeout=10)


async def test_forged_sender_offers_are_refused(tmp_path: Path) -> None:
    alice, bob, carol = (Person.make(n, tmp_path) for n in ("alice", "bob", "carol"))
    mallory = Identity.generate()
    async with running_server() as server:
        await _pinned_pair(server, alice, bob)
        async with two_phones(server.url, alice, bob) as (_pa, pb), phone(carol, server.url):
            now = int(time.time() * 1000)

            def offer(sender: Identity, to: Person, call_id: bytes) -> bytes:
                msg = m.Offer(bytes(32), {"any": "thing"})
                header = EnvelopeHeader(call_id, 0, now)
                return seal(sender, to.identity.public_key, header, m.encode(msg))

            # (1) An outer sender field swapped for alice's key, the box sealed by mallory.
            real = offer(mallory, bob, b"\x01" * 16)
            swapped = real[:1] + alice.identity.public_key + real[33:]
            await server.deliver("bob", "alice", swapped)
            # (2) A reflected envelope: bob's own offer to alice, delivered back to bob.
            reflected = offer(bob.identity, alice, b"\x02" * 16)
            await server.deliver("bob", "alice", reflected)
            # (3) An envelope sealed to someone else (carol), delivered to bob.
            await server.deliver("bob", "alice", offer(alice.identity, carol, b"\x03" * 16))
            assert await nothing_rings(pb, 0.5)
            assert pb.dropped["bad_envelope"] == 3
            contact = bob.contacts.get("alice")
            assert contact is not None and contact.state is not TrustState.CHANGED
            # (4) Mallory's valid envelope under alice's (pinned) name: refused as a key change.
            await server.deliver("bob", "alice", offer(mallory, bob, b"\x04" * 16))
            warning = await pb.next_warning(timeout=5)
            assert warning.user == "alice"
            assert await nothing_rings(pb, 0.5)
            assert pb.calls == []
    print("forged offers refused: 3 failed to open, 1 refused as a key change")


async def test_forged_hangup_in_a_call_is_not_obeyed(tmp_path: Path) -> None:
    """A hangup forged under bob's name (another key) is not taken for bob's hangup."""
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    mallory = Identity.generate()
    async with running_server() as server:
        await _pinned_pair(server, alice, bob)
        async with two_phones(server.url, alice, bob) as (pa, pb):
            a, b = await connect_call(pa, pb, "bob")
            # Tampered copy of a real envelope from bob: fails to open, the call goes on.
            real = labelled(server, alice)["accept"].body
            await server.deliver("alice", "bob", real[:-1] + bytes([real[-1] ^ 1]))
            await asyncio.sleep(0.3)
            assert a.state is State.CONNECTED and await audio_flows(a)
            header = EnvelopeHeader(a.call_id, 99, int(time.time() * 1000))
            forged = seal(mallory, alice.identity.public_key, header, m.encode(m.Hangup()))
            await server.deliver("alice", "bob", forged)
            warning = await pa.next_warning(timeout=5)
            # Not obeyed: the forgery is seen for what it is, a different key under bob's
            # name. The user is warned, and the authenticated call goes on.
            assert warning.user == "bob"
            assert a.state is State.CONNECTED and await audio_flows(a)
            # One forged message does not mark bob "changed" either (audit finding 4): only an
            # offer may record another key, and bob's pinned key keeps working.
            assert alice.contacts.get("bob").state is not TrustState.CHANGED
            await a.hangup()
            await b.wait_ended(timeout=15)


async def _replay_offer_to_restarted_phone(tmp_path: Path, *, journal: bool) -> bool:
    """A call rings bob and is cancelled; bob's phone restarts; the server replays the offer
    seconds later (well within the age limit). True if the replay rang the restarted phone."""
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    changes = {"replay_journal": tmp_path / "bob" / "replay.json"} if journal else {}
    async with running_server() as server:
        async with phone(alice, server.url) as pa, phone(bob, server.url, **changes) as pb:
            out = await pa.call("bob")
            await pb.incoming(timeout=10)
            await out.hangup()
            await out.wait_ended(timeout=10)
        offer = labelled(server, bob)["offer"]
        async with phone(bob, server.url, **changes) as restarted:
            await server.deliver("bob", "alice", offer.body)
            return not await nothing_rings(restarted, 1.0)


async def test_an_offer_replayed_to_a_restarted_phone_does_not_ring(tmp_path: Path) -> None:
    assert not await _replay_offer_to_restarted_phone(tmp_path, journal=True)
    journal = tmp_path / "bob" / "replay.json"
    assert journal.stat().st_mode & 0o777 == 0o600


async def test_without_the_journal_that_replay_would_ring(tmp_path: Path) -> None:
    # The control: the replay passes the age check, so only the journal stops it.
    assert await _replay_offer_to_restarted_phone(tmp_path, journal=False)
