"""Audit finding 10: envelopes used the static identity keys only, so a thief of an identity
key could read every recorded envelope and forge any message of any call to the victim.

Now the messages after the key reveal are sealed with keys from the call's ephemeral agreement
(voice.crypto.callenvelope). What a stolen key still reads (the offer, ringing and reveal) is
checked in test_adv_recorded_call.py; here: what it can still forge.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import running_server
from tests.adversarial.phones import Person, audio_flows, connect_call, two_phones
from voice.call import inbound as inbound_module
from voice.call import messages as m
from voice.call.events import State
from voice.call.outbound import CallSealer


async def _forge_hangup_in_a_connected_call(tmp_path: Path) -> tuple[State, bool]:
    """A thief with alice's identity key (here: the test holds it) forges alice's hangup to bob
    in the middle of their call, with a fresh seq. Bob's call state and audio after it."""
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    async with running_server() as server, two_phones(server.url, alice, bob) as (pa, pb):
        a, b = await connect_call(pa, pb, "bob")
        thief = CallSealer(alice.identity, bob.identity.public_key, a.call_id, time.time)
        for _ in range(20):
            thief.seal(m.Hangup())  # skip past the seqs alice really used
        await server.deliver("bob", "alice", thief.seal(m.Hangup()))
        await asyncio.sleep(0.5)
        state, flowing = b.state, b.state is State.CONNECTED and await audio_flows(b)
        if not a.state.terminal:
            await a.hangup()
        return state, flowing


async def test_a_stolen_identity_key_cannot_hang_up_a_connected_call(tmp_path: Path) -> None:
    state, flowing = await _forge_hangup_in_a_connected_call(tmp_path)
    assert state is State.CONNECTED and flowing


async def test_control_without_the_call_keys_the_forgery_ends_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The defence removed (identity-sealed envelopes accepted all call long): the forged
    hangup is obeyed, as it was before the fix."""
    monkeypatch.setattr(inbound_module, "identity_sealed_accepted", lambda *a, **k: True)
    state, _ = await _forge_hangup_in_a_connected_call(tmp_path)
    assert state is State.ENDED
