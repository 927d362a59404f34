"""Attack 1.1: the server substitutes its own identity and ephemeral keys in both directions.

The malicious server (tests/adversarial/mitm.py) answers every ``lookup`` with a fake identity
of its own, opens every envelope, runs its own committed key agreement with each phone and
re-seals everything, a full man in the middle. Real phones, real server protocol.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import Behaviour, running_server
from tests.adversarial.mitm import MitmBehaviour
from tests.adversarial.phones import (
    Person,
    accept_call,
    audio_flows,
    connect_call,
    nothing_rings,
    phone,
    two_phones,
)
from voice.call import messages as m
from voice.call.events import FailReason, State
from voice.crypto.contacts import TrustState
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.errors import KeyChangedError


async def test_first_contact_mitm_gives_the_two_users_different_sas(tmp_path: Path) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    attack = MitmBehaviour()
    # connect_timeout: how long an accepted call waits for its first authenticated packet
    # before it fails with no_media_path (20 s by default; 5 s is plenty on loopback)
    async with (
        running_server(attack) as server,
        two_phones(server.url, alice, bob, connect_timeout=5.0) as (pa, pb),
    ):
        a, b = await accept_call(pa, pb, "bob")
        leg = attack.mitm.legs[a.call_id]
        assert leg.keys_with_caller is not None and leg.keys_with_callee is not None
        # It really sits in the middle: each phone agreed its keys with the attacker ...
        assert a.peer_key == attack.mitm.fake("bob").public_key
        assert b.peer_key == attack.mitm.fake("alice").public_key
        sas_a, sas_b = alice.keys.sas[a.call_id], bob.keys.sas[b.call_id]
        assert sas_a == leg.keys_with_caller.sas and sas_b == leg.keys_with_callee.sas
        # ... and that would show: the SAS the two users would read to each other differ.
        assert sas_a.value != sas_b.value and sas_a.words != sas_b.words
        # The media keys differ too, so not one packet of audio authenticates, and so neither
        # phone ever says "connected" (nor shows a SAS): a MITM must relay the media, re-keyed,
        # to get that far, and then the SAS above gives it away.
        await asyncio.sleep(1.0)
        for call in (a, b):
            stats = call.media_stats()
            assert stats is not None and stats.rtp_packets_received == 0
            assert stats.auth_failures > 0
            assert call.sas is None and call.state is State.CONNECTED
        for call in (a, b):
            assert (await call.wait_ended(timeout=30)).reason in (
                FailReason.NO_MEDIA_PATH,
                FailReason.REMOTE_ERROR,
            )


async def _honest_first_call(url: str, alice: Person, bob: Person) -> None:
    async with two_phones(url, alice, bob) as (pa, pb):
        a, b = await connect_call(pa, pb, "bob")
        assert a.sas == b.sas
        a.mark_verified()
        b.mark_verified()
        await a.hangup()
        await b.wait_ended(timeout=10)


@pytest.mark.parametrize("caller", ["alice", "bob"])
async def test_pinned_contact_refuses_a_substituted_key(tmp_path: Path, caller: str) -> None:
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    people = {"alice": alice, "bob": bob}
    callee = "bob" if caller == "alice" else "alice"
    async with running_server() as server:
        await _honest_first_call(server.url, alice, bob)  # both pin the real keys
        attack = MitmBehaviour()
        server.set_behaviour(attack)
        async with (
            phone(people[caller], server.url) as p_caller,
            phone(people[callee], server.url) as p_callee,
        ):
            sent_before = len(server.envelopes)
            with pytest.raises(KeyChangedError):
                await p_caller.call(callee)
            assert len(server.envelopes) == sent_before  # nothing was sealed to the attacker
            # The attacker also starts the call itself, as the caller, with its fake key.
            fake = attack.mitm.fake(caller)
            offer = m.Offer(bytes(32), {"x": 1})
            header = EnvelopeHeader(bytes(16), 0, int(time.time() * 1000))
            body = seal(fake, server.keys[callee], header, m.encode(offer))
            await server.deliver(callee, caller, body)
            warning = await p_callee.next_warning(timeout=5)
            assert warning.user == caller
            assert await nothing_rings(p_callee, 0.5)
            assert p_callee.dropped["key_changed"] >= 1
            assert all(c.state is State.ENDED for c in p_callee.calls)
            contact = people[callee].contacts.get(caller)
            assert contact is not None and contact.state is TrustState.CHANGED


async def test_honest_behaviour_is_the_control(tmp_path: Path) -> None:
    """Control: the same server, routing honestly, gives equal SAS and flowing audio."""
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with running_server(Behaviour()) as server, two_phones(server.url, alice, bob) as ph:
        pa, pb = ph
        a, b = await connect_call(pa, pb, "bob")
        assert a.sas is not None and a.sas == b.sas
        # The audio flows: each phone keeps authenticating the other's packets, and not one
        # packet fails authentication (the MITM call above has none and many).
        assert await audio_flows(a) and await audio_flows(b)
        for call in (a, b):
            stats = call.media_stats()
            assert stats is not None and stats.rtp_packets_received > 0
            assert stats.auth_failures == 0
        await a.hangup()
        await b.wait_ended(timeout=10)
