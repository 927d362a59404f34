"""Audit finding 1 (high): any user could stop a person from receiving calls by filling the
replay memory of their phone.

The attack as the audit ran it: 64 fresh accounts each send 64 ``hangup`` envelopes under
their own keys (fresh call ids, timestamps now). Before the fix every one of them pinned its
sender as a contact and took a slot, 4,096 slots filled the memory, the victim's next genuine
call was refused as a bad envelope and never rang, a restart reloaded the full memory from the
journal, and the victim kept 64 pinned "contacts". Now only an offer that rings may pin a key,
strangers share a small pool of their own that evicts its oldest entry, and the journal only
learns calls that were delivered.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.adversarial.malicious_server import MaliciousServer, running_server
from tests.adversarial.phones import Person, phone
from voice.call import messages as m
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.phone import Phone

ACCOUNTS = 64
PER_ACCOUNT = 64  # 64 x 64 = 4,096: the size of the solicited pool
BATCH = 128  # deliveries before waiting for the phone (its client buffers 256)


async def _flood(server: MaliciousServer, victim: Person, p: Phone, message: m.Message) -> None:
    """ACCOUNTS accounts, each with its own key, each send PER_ACCOUNT envelopes."""
    accounts = [(f"mallory{i}", Identity.generate()) for i in range(ACCOUNTS)]
    before = p.deliveries
    sent = 0
    for name, key in accounts:
        for _ in range(PER_ACCOUNT):
            header = EnvelopeHeader(os.urandom(16), 0, int(time.time() * 1000))
            body = seal(key, victim.identity.public_key, header, m.encode(message))
            assert await server.deliver(victim.name, name, body)
            sent += 1
            if sent % BATCH == 0:
                await _handled(p, before + sent)
    await _handled(p, before + sent)


async def _handled(p: Phone, total: int) -> None:
    """Wait until the phone handled ``total`` deliveries."""
    for _ in range(1200):
        if p.deliveries >= total:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the phone handled too few deliveries: {p.dropped}")


async def _genuine_call_rings(caller: Person, callee: Phone, url: str) -> bool:
    async with phone(caller, url) as pc:
        out = await pc.call(callee.user)
        try:
            inc = await callee.incoming(timeout=5)
        except TimeoutError:
            return False
        await out.hangup()
        await inc.wait_ended(timeout=10)
        return inc.call_id == out.call_id


async def test_hangup_floods_from_fresh_accounts_leave_no_trace(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    journal = tmp_path / "bob" / "replay.json"
    async with running_server() as server:
        async with phone(bob, server.url, replay_journal=journal) as pb:
            await _flood(server, bob, pb, m.Hangup())
            assert pb.dropped["unsolicited"] == ACCOUNTS * PER_ACCOUNT
            assert len(pb._inbound.replay) == 0  # no slot taken
            assert bob.contacts.all() == []  # nobody pinned
            # alice is a first contact too: her call rings.
            assert await _genuine_call_rings(alice, pb, server.url)
        # A restart reloads only what was delivered: alice's call, not the flood.
        async with phone(bob, server.url, replay_journal=journal) as restarted:
            assert len(restarted._inbound.replay) <= 1
            assert await _genuine_call_rings(alice, restarted, server.url)
        assert [c.user for c in bob.contacts.all()] == ["alice"]


async def test_offer_floods_cannot_crowd_out_a_first_contact(tmp_path: Path) -> None:
    """Offers may ring (anyone may call us), but strangers' offers only ever fill the small
    unsolicited pool, which evicts its oldest entry: a genuine first contact still rings, and
    only callers whose offer rang are pinned."""
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    offer = m.Offer(os.urandom(32), {"any": "thing"})  # fails as soon as ICE starts
    async with running_server() as server, phone(bob, server.url) as pb:
        await _flood(server, bob, pb, offer)
        replay = pb._inbound.replay
        assert len(replay) <= 256 and all(not e[3] for e in replay.remembered())
        rang = {c.peer for c in pb.calls}
        assert {c.user for c in bob.contacts.all()} == rang  # busy answers pin nobody
        for call in pb.calls:
            if not call.state.terminal:
                await call.hangup()
        assert await _genuine_call_rings(alice, pb, server.url)
