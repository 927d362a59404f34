"""A full man in the middle on first contact, built from the real crypto and call messages.

The server answers every key ``lookup`` with a fake identity of its own for that user, so each
phone seals to the server. :class:`Mitm` opens every envelope with the fake identity it was sealed
to, runs its own committed key agreement with each side (callee towards the caller, caller
towards the callee), rewrites the key messages, and re-seals everything to the real recipient
from the fake identity of the real sender, exactly as an honest client would. Descriptions are
passed on unchanged, so ICE connects the two phones directly; the SRTP keys differ on the two
legs and the SASes differ with probability 1 - 2^-bits.

With ``grind`` set, the attacker also tries to steer the SAS: when it answers the caller it has
already agreed keys with the callee (so it knows the SAS it must hit), and it tries ``grind``
different continuity fields, keeping one whose SAS matches under its best guess of the caller's
committed key. The commitment is what makes that guess worthless. ``oracle`` (tests only) hands
it the caller's real key before the reveal: that is the protocol *without* a commitment, and
grinding then succeeds, which shows the measurement can tell the difference.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.adversarial.malicious_server import Behaviour, Envelope, MaliciousServer
from voice.call import messages as m
from voice.crypto._bytes import sha256
from voice.crypto.envelope import EnvelopeHeader, open_envelope, seal
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import (
    CalleeKeyAgreement,
    CallerKeyAgreement,
    CallKeys,
    Reveal,
    encode_transcript,
)
from voice.crypto.sas import DEFAULT_SAS_BITS, Sas
from voice.errors import BadCallMessage, BadEnvelope

Oracle = Callable[[bytes], tuple[bytes, bytes] | None]  # call_id -> (eph_a, continuity_a)


@dataclass
class Leg:
    """The attacker's state for one call it sits in."""

    call_id: bytes
    caller: str
    callee: str
    towards_caller: CalleeKeyAgreement
    towards_callee: CallerKeyAgreement
    caller_description: dict[str, object]
    commitment: bytes
    callee_description: dict[str, object] | None = None
    reveal_to_callee: Reveal | None = None
    keys_with_caller: CallKeys | None = None
    keys_with_callee: CallKeys | None = None
    candidates_tried: int = 0
    predicted_match: bool = False


@dataclass
class Mitm:
    """Sans-I/O: ``relay(sender, recipient, body)`` returns the body to deliver (or None)."""

    real_keys: dict[str, bytes]  # username -> the key that really owns it
    sas_bits: int = DEFAULT_SAS_BITS
    grind: int = 0
    oracle: Oracle | None = None
    fakes: dict[str, Identity] = field(default_factory=dict)
    legs: dict[bytes, Leg] = field(default_factory=dict)
    refused: int = 0

    def fake(self, user: str) -> Identity:
        if user not in self.fakes:
            self.fakes[user] = Identity.generate()
        return self.fakes[user]

    def relay(self, sender: str, recipient: str, body: bytes) -> bytes | None:
        try:
            opened = open_envelope(self.fake(recipient), body)
            message = m.decode(opened.payload)
        except (BadEnvelope, BadCallMessage):
            self.refused += 1
            return None
        rewritten = self._rewrite(sender, recipient, opened.header, message)
        return seal(
            self.fake(sender), self.real_keys[recipient], opened.header, m.encode(rewritten)
        )

    def _rewrite(
        self, sender: str, recipient: str, header: EnvelopeHeader, message: m.Message
    ) -> m.Message:
        call_id = header.call_id
        if isinstance(message, m.Offer):
            leg = Leg(
                call_id=call_id,
                caller=sender,
                callee=recipient,
                towards_caller=self._callee_agreement(
                    sender, recipient, call_id, message.commitment
                ),
                towards_callee=CallerKeyAgreement(
                    me=self.fake(sender).public_key,
                    peer=self.real_keys[recipient],
                    call_id=call_id,
                    my_name=sender,
                    peer_name=recipient,
                    sas_bits=self.sas_bits,
                ),
                caller_description=message.description,
                commitment=message.commitment,
            )
            self.legs[call_id] = leg
            return m.Offer(leg.towards_callee.commitment, message.description)
        found = self.legs.get(call_id)
        if found is None:
            return message
        leg = found
        if isinstance(message, m.Ringing):
            leg.callee_description = message.description
            leg.reveal_to_callee = leg.towards_callee.receive_answer(
                eph_b=message.eph_b,
                continuity_b=message.continuity_b,
                caller_description=m.canonical_description(leg.caller_description),
                callee_description=m.canonical_description(message.description),
            )
            leg.keys_with_callee = leg.towards_callee.keys()
            if self.grind:
                self._grind(leg)
            answer = leg.towards_caller.answer()
            return m.Ringing(answer.eph_b, answer.continuity_b, message.description)
        if isinstance(message, m.Reveal) and leg.reveal_to_callee is not None:
            assert leg.callee_description is not None
            leg.keys_with_caller = leg.towards_caller.receive_reveal(
                eph_a=message.eph_a,
                continuity_a=message.continuity_a,
                caller_description=m.canonical_description(leg.caller_description),
                callee_description=m.canonical_description(leg.callee_description),
            )
            mine = leg.reveal_to_callee
            return m.Reveal(mine.eph_a, mine.continuity_a)
        return message

    def _callee_agreement(
        self, caller: str, callee: str, call_id: bytes, commitment: bytes
    ) -> CalleeKeyAgreement:
        return CalleeKeyAgreement(
            me=self.fake(callee).public_key,
            peer=self.real_keys[caller],
            call_id=call_id,
            commitment=commitment,
            my_name=callee,
            peer_name=caller,
            sas_bits=self.sas_bits,
        )

    def _grind(self, leg: Leg) -> None:
        """Pick, among ``grind`` answers to the caller, one predicted to match the callee SAS."""
        assert leg.keys_with_callee is not None and leg.callee_description is not None
        target = leg.keys_with_callee.sas.value
        known = self.oracle(leg.call_id) if self.oracle is not None else None
        eph_a, continuity_a = known or (os.urandom(32), os.urandom(64))  # the best guess
        caller_description = m.canonical_description(leg.caller_description)
        callee_description = m.canonical_description(leg.callee_description)
        for _ in range(self.grind):
            candidate = self._callee_agreement(leg.caller, leg.callee, leg.call_id, leg.commitment)
            answer = candidate.answer()
            transcript = encode_transcript(
                call_id=leg.call_id,
                caller=self.real_keys[leg.caller],
                callee=self.fake(leg.callee).public_key,
                caller_name=leg.caller,
                callee_name=leg.callee,
                eph_a=eph_a,
                eph_b=answer.eph_b,
                continuity_a=continuity_a,
                continuity_b=answer.continuity_b,
                caller_description=caller_description,
                callee_description=callee_description,
            )
            leg.candidates_tried += 1
            leg.towards_caller = candidate
            if Sas.from_transcript_hash(sha256(transcript), self.sas_bits).value == target:
                leg.predicted_match = True
                return


class MitmBehaviour(Behaviour):
    """Server behaviour: lie in every key lookup and relay every envelope through :class:`Mitm`."""

    def __init__(self, *, sas_bits: int = DEFAULT_SAS_BITS, grind: int = 0) -> None:
        self.mitm = Mitm(real_keys={}, sas_bits=sas_bits, grind=grind)

    def attach(self, server: MaliciousServer) -> None:
        super().attach(server)
        self.mitm.real_keys = server.keys  # the keys that really logged in

    def on_lookup(self, user: str) -> bytes | None:
        return self.mitm.fake(user).public_key if user in self.server.keys else None

    async def on_send(self, envelope: Envelope) -> None:
        body = self.mitm.relay(envelope.sender, envelope.to, envelope.body)
        if body is not None:
            await self.server.deliver(envelope.to, envelope.sender, body)
