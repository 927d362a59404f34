"""Attacks on the client's replay memory and on what it keeps about refused callers.

* The replay journal must record every new call, also one that arrives just as an older call
  expires from the guard (the guard's size is then unchanged).
* One registered account ("mallory": the honest server puts her login in ``from``) seals each
  envelope with a fresh identity key. Such envelopes are refused as key changes; they must not
  fill the replay memory (which would refuse every new call) nor pile up warnings and refused
  call ids without bound.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.adversarial.malicious_server import MaliciousServer, running_server
from tests.adversarial.phones import Person, kind_of, nothing_rings, phone, two_phones
from voice.call import messages as m
from voice.call.inbound import MAX_REFUSED_OFFERS
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity, fingerprint_of
from voice.crypto.replay import ReplayGuard
from voice.phone import Phone
from voice.phone.phone import MAX_WARNINGS

GUARD_CALLS = 32  # a small replay memory, so that filling it takes few envelopes
BATCH = 64  # offers delivered before waiting for the phone (its client buffers 256)


async def test_a_call_that_arrives_as_the_last_one_expires_is_journaled(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    journal = tmp_path / "bob" / "replay.json"
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    async with running_server() as server:
        async with (
            phone(alice, server.url, clock=clock) as pa,
            phone(bob, server.url, clock=clock, replay_journal=journal) as pb,
        ):
            for minutes in (0.0, 2.0):  # the second call comes after the first expired
                offset[0] = 60.0 * minutes
                out = await pa.call("bob")
                inc = await pb.incoming(timeout=10)
                await out.hangup()
                await inc.wait_ended(timeout=10)  # bob saw the cancel before the clock moves
        offers = [e for e in server.envelopes if e.to == "bob" and kind_of(bob, e.body) == "offer"]
        assert len(offers) == 2
        async with phone(bob, server.url, clock=clock, replay_journal=journal) as restarted:
            await server.deliver("bob", "alice", offers[-1].body)  # seconds old: age check passes
            assert await nothing_rings(restarted, 1.0)
            assert restarted.dropped["bad_envelope"] == 1


async def _flood(server: MaliciousServer, victim: Person, p: Phone, count: int) -> list[bytes]:
    """``count`` offers from mallory's account, each sealed with a fresh identity key; returns
    those keys, in the order sent.

    Sent in batches the phone handles before the next one: the signaling client buffers at most
    MAX_BUFFERED_DELIVERIES unread deliveries and drops the rest, which under load would make
    the counts below depend on scheduling.
    """
    before = sum(p.dropped.values())
    now = int(time.time() * 1000)
    keys: list[bytes] = []
    while len(keys) < count:
        for _ in range(min(BATCH, count - len(keys))):
            header = EnvelopeHeader(os.urandom(16), 0, now)
            offer = m.encode(m.Offer(os.urandom(32), {"any": "thing"}))
            sender = Identity.generate()
            body = seal(sender, victim.identity.public_key, header, offer)
            await server.deliver(victim.name, "mallory", body)
            keys.append(sender.public_key)
        await _handled(p, before + len(keys) - 1)  # the first one pins mallory's key and rings
    assert p._client.dropped_deliveries == 0
    return keys


async def _handled(p: Phone, total: int) -> None:
    for _ in range(1200):
        if sum(p.dropped.values()) >= total:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the phone handled too few deliveries: {p.dropped}")


async def test_fresh_keys_from_one_account_do_not_fill_the_replay_memory(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with running_server() as server, two_phones(server.url, alice, bob) as (pa, pb):
        pb._inbound.replay = ReplayGuard(clock=pb.config.hooks.clock, max_calls=GUARD_CALLS)
        await _flood(server, bob, pb, GUARD_CALLS + 8)
        # Only mallory's first offer, which pinned her key, became a call. Its made-up media
        # description fails it as soon as ICE starts, so it may have ended already.
        (first,) = [c for c in pb._calls.values() if c.peer == "mallory"]
        if not first.state.terminal:
            await first.decline()
        await first.wait_ended(timeout=5)
        # Alice's call still rings: mallory's refused envelopes took no room in the memory.
        out = await pa.call("bob")
        inc = await pb.incoming(timeout=5)
        assert inc.peer == "alice" and inc.call_id == out.call_id
        assert pb.dropped["key_changed"] == GUARD_CALLS + 7 and pb.dropped["bad_envelope"] == 0
        await out.hangup()
        await inc.wait_ended(timeout=10)


async def test_refused_callers_do_not_pile_up_warnings_and_call_ids(tmp_path: Path) -> None:
    bob = Person.make("bob", tmp_path)
    count = MAX_REFUSED_OFFERS + 40
    async with running_server() as server, phone(bob, server.url) as pb:
        keys = await _flood(server, bob, pb, count)
        assert pb.dropped["key_changed"] == count - 1
        assert pb._inbound.refused_offers <= MAX_REFUSED_OFFERS
        # The first offer pinned mallory's key; each later one was refused with a warning naming
        # its key. The newest MAX_WARNINGS are kept, in order: the oldest were dropped first.
        newest = [fingerprint_of(key).human for key in keys[1:]][-MAX_WARNINGS:]
        assert count - 1 > MAX_WARNINGS and len(set(newest)) == MAX_WARNINGS
        assert [w.new_fingerprint for w in pb.warnings] == newest
        assert pb._warning_queue.qsize() == MAX_WARNINGS
        queued = [await pb.next_warning(timeout=1) for _ in range(MAX_WARNINGS)]
        assert [w.new_fingerprint for w in queued] == newest  # still delivered, oldest first
        assert all(w.user == "mallory" for w in queued)
