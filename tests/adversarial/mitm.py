"""A full man in the middle on first contact, built from the real crypto and call messages.

The server answers every key ``lookup`` with a fake identity of its own for that user, so each
phone seals to the server. :class:`Mitm` opens every envelope with the fake identity it was sealed
to, runs its own committed key agreement with each side (callee towards the caller, caller
towards the callee), rewrites the key messages, and re-seals everything to the real recipient
from the fake identity of the real sender, exactly as an honest client would. Descriptions are
passed on unchanged, so ICE connects the two phones directly; the SRTP keys differ on the two
legs and the SASes differ with probability 1 - 2^-bits.

With ``grind`` set, the attacker also tries to steer the SAS, using only what the protocol shows
it (:mod:`tests.support.grinding`): when the caller's reveal arrives it knows the caller's SAS,
and before it passes its own reveal on to the callee it tries up to ``grind`` changed reveals
(new ephemeral key, new continuity field), keeping one that the callee's commitment check would
accept and that gives the callee the same SAS. The commitment in its offer is what makes every
changed reveal unacceptable; a test that breaks ``commitment_of`` sees the attacker win.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.adversarial.malicious_server import Behaviour, Envelope, MaliciousServer
from tests.support.grinding import GrindStats, Opening, grind_reveal
from voice.call import messages as m
from voice.crypto.callenvelope import call_key_id, is_call_envelope, key_id_of, open_call, seal_call
from voice.crypto.envelope import EnvelopeHeader, open_envelope, seal
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import (
    CalleeKeyAgreement,
    CallerKeyAgreement,
    CallKeys,
    Reveal,
)
from voice.crypto.keyschedule import Exchange
from voice.crypto.sas import DEFAULT_SAS_BITS
from voice.errors import BadCallMessage, BadEnvelope


@dataclass
class Leg:
    """The attacker's state for one call it sits in."""

    call_id: bytes
    caller: str
    callee: str
    towards_caller: CalleeKeyAgreement
    towards_callee: CallerKeyAgreement
    caller_description: dict[str, object]
    commitment: bytes  # the caller's, in its offer
    opening_to_callee: Opening  # what the attacker committed to towards the callee
    callee_answer: m.Ringing | None = None  # the callee's key message and description
    reveal_to_callee: Reveal | None = None
    keys_with_caller: CallKeys | None = None
    keys_with_callee: CallKeys | None = None
    grinding: GrindStats | None = None


@dataclass
class Mitm:
    """Sans-I/O: ``relay(sender, recipient, body)`` returns the body to deliver (or None)."""

    real_keys: dict[str, bytes]  # username -> the key that really owns it
    sas_bits: int = DEFAULT_SAS_BITS
    grind: int = 0  # changed reveals to try per call (0: no grinding)
    fakes: dict[str, Identity] = field(default_factory=dict)
    legs: dict[bytes, Leg] = field(default_factory=dict)
    refused: int = 0

    def fake(self, user: str) -> Identity:
        if user not in self.fakes:
            self.fakes[user] = Identity.generate()
        return self.fakes[user]

    def relay(self, sender: str, recipient: str, body: bytes) -> bytes | None:
        if is_call_envelope(body):
            return self._relay_call_keyed(body)
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

    def _relay_call_keyed(self, body: bytes) -> bytes | None:
        """After the key reveal each side seals with its call key: the attacker, who agreed a
        key with each side, opens with one and seals again with the other (as a real man in
        the middle would)."""
        for leg in self.legs.values():
            caller, callee = leg.keys_with_caller, leg.keys_with_callee
            if caller is None or callee is None:
                continue
            for rx, tx in ((caller.envelope_rx, callee.envelope_tx),
                           (callee.envelope_rx, caller.envelope_tx)):  # fmt: skip
                if key_id_of(body) == call_key_id(rx):
                    header, payload = open_call(rx, body)
                    return seal_call(tx, header, payload)
        self.refused += 1
        return None

    def _rewrite(
        self, sender: str, recipient: str, header: EnvelopeHeader, message: m.Message
    ) -> m.Message:
        call_id = header.call_id
        if isinstance(message, m.Offer):
            opening = Opening.fresh()
            leg = Leg(
                call_id=call_id,
                caller=sender,
                callee=recipient,
                towards_caller=self._callee_agreement(
                    sender, recipient, call_id, message.commitment
                ),
                towards_callee=self._caller_agreement(sender, recipient, call_id, opening),
                caller_description=message.description,
                commitment=message.commitment,
                opening_to_callee=opening,
            )
            self.legs[call_id] = leg
            return m.Offer(leg.towards_callee.commitment, message.description)
        found = self.legs.get(call_id)
        if found is None:
            return message
        leg = found
        if isinstance(message, m.Ringing):
            leg.callee_answer = message
            leg.reveal_to_callee = leg.towards_callee.receive_answer(
                eph_b=message.eph_b,
                continuity_b=message.continuity_b,
                caller_description=m.canonical_description(leg.caller_description),
                callee_description=m.canonical_description(message.description),
            )
            leg.keys_with_callee = leg.towards_callee.keys()
            answer = leg.towards_caller.answer()
            return m.Ringing(answer.eph_b, answer.continuity_b, message.description)
        if isinstance(message, m.Reveal) and leg.reveal_to_callee is not None:
            assert leg.callee_answer is not None
            leg.keys_with_caller = leg.towards_caller.receive_reveal(
                eph_a=message.eph_a,
                continuity_a=message.continuity_a,
                caller_description=m.canonical_description(leg.caller_description),
                callee_description=m.canonical_description(leg.callee_answer.description),
            )
            if self.grind:
                self._grind(leg)
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

    def _caller_agreement(
        self, caller: str, callee: str, call_id: bytes, opening: Opening
    ) -> CallerKeyAgreement:
        return CallerKeyAgreement(
            me=self.fake(caller).public_key,
            peer=self.real_keys[callee],
            call_id=call_id,
            my_name=caller,
            peer_name=callee,
            rng=opening.rng(),
            sas_bits=self.sas_bits,
        )

    def _grind(self, leg: Leg) -> None:
        """Replace the reveal to the callee by one that gives it the caller's SAS, if the
        commitment sent to the callee lets any through (:func:`grind_reveal`)."""
        assert leg.keys_with_caller is not None and leg.callee_answer is not None
        answer = leg.callee_answer
        callee_leg = Exchange(
            call_id=leg.call_id,
            caller=self.fake(leg.caller).public_key,
            callee=self.real_keys[leg.callee],
            caller_name=leg.caller,
            callee_name=leg.callee,
            eph_a=b"",  # the reveal being ground
            eph_b=answer.eph_b,
            continuity_a=b"",
            continuity_b=answer.continuity_b,
            caller_description=m.canonical_description(leg.caller_description),
            callee_description=m.canonical_description(answer.description),
        )
        chosen, leg.grinding = grind_reveal(
            callee_leg,
            committed=leg.opening_to_callee,
            commitment=leg.towards_callee.commitment,
            target=leg.keys_with_caller.sas.value,
            sas_bits=self.sas_bits,
            budget=self.grind,
        )
        if chosen == leg.opening_to_callee:
            return
        agreement = self._caller_agreement(leg.caller, leg.callee, leg.call_id, chosen)
        leg.reveal_to_callee = agreement.receive_answer(
            eph_b=answer.eph_b,
            continuity_b=answer.continuity_b,
            caller_description=callee_leg.caller_description,
            callee_description=callee_leg.callee_description,
        )
        leg.towards_callee, leg.keys_with_callee = agreement, agreement.keys()


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
