"""A full man in the middle on first contact, built from the real crypto and call messages.

The server answers every key ``lookup`` with a fake identity of its own for that user, so each
phone seals to the server. :class:`Mitm` opens every envelope with the fake identity it was sealed
to, runs its own committed key agreement with each side (callee towards the caller, caller
towards the callee, ML-KEM included: it encapsulates to the caller's key and offers its own to
the callee), rewrites the key messages, and re-seals everything to the real recipient from the
fake identity of the real sender, exactly as an honest client would. Descriptions and version
lists are passed on unchanged, so ICE connects the two phones directly; the SRTP keys differ on
the two legs and the SASes differ with probability 1 - 2^-bits.

With ``grind`` set, the attacker also tries to steer the SAS, using only what the protocol shows
it (:mod:`tests.support.grinding`): when the callee's ringing arrives it knows the callee's SAS
and grinds its own ringing to the caller (new encapsulations, new ephemeral keys), if it can
read the caller's key out of the offer's commitment; when the caller's reveal arrives it knows
the caller's SAS and grinds its reveal to the callee (new ephemeral key, new continuity field),
keeping one the callee's commitment check would accept. The commitments are what stop both; a
test that breaks ``commitment_of`` sees the attacker win.

``retained``: secrets the attacker shares with each real user (it has been in the middle since
their first call and the users never compared the SAS), so it knows their continuity fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tests.adversarial.malicious_server import Behaviour, Envelope, MaliciousServer
from tests.support.grinding import (
    ANSWER_WAYS,
    Answering,
    GrindStats,
    Opening,
    grind_answer,
    grind_reveal,
)
from voice.call import messages as m
from voice.crypto.callenvelope import call_key_id, is_call_envelope, key_id_of, open_call, seal_call
from voice.crypto.continuity import CALLEE, CALLER, RetainedSecrets, continuity_field
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
from voice.crypto.versions import negotiate
from voice.errors import BadCallMessage, BadEnvelope


def _unknown(n: int) -> bytes:
    raise LookupError("a slot without a retained secret: random, unknown to the attacker")


@dataclass
class Leg:
    """The attacker's state for one call it sits in."""

    call_id: bytes
    caller: str
    callee: str
    offer: m.Offer  # the caller's
    towards_callee: CallerKeyAgreement
    opening_to_callee: Opening  # what the attacker committed to towards the callee
    towards_caller: CalleeKeyAgreement | None = None  # made once the callee answered
    callee_answer: m.Ringing | None = None  # the callee's key message and description
    reveal_to_callee: Reveal | None = None
    keys_with_caller: CallKeys | None = None
    keys_with_callee: CallKeys | None = None
    grinding: GrindStats = field(default_factory=GrindStats)


@dataclass
class Mitm:
    """Sans-I/O: ``relay(sender, recipient, body)`` returns the body to deliver (or None)."""

    real_keys: dict[str, bytes]  # username -> the key that really owns it
    sas_bits: int = DEFAULT_SAS_BITS
    grind: int = 0  # changed ringings and changed reveals to try per call (0: no grinding)
    retained: dict[str, RetainedSecrets] = field(default_factory=dict)  # shared with each user
    answer_ways: tuple[frozenset[str], ...] = ANSWER_WAYS  # what it changes in its ringing
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

    def _tokens(
        self, user: str, *, role: bytes, call_id: bytes, caller: bytes, callee: bytes
    ) -> bytes | None:
        """The continuity field ``role`` sends on the attacker's leg with ``user``, if the
        retained secrets fill both slots (None: it would hold random bytes)."""
        try:
            return continuity_field(
                self.retained.get(user), role=role, call_id=call_id, caller=caller,
                callee=callee, rng=_unknown,
            )  # fmt: skip
        except LookupError:
            return None

    def _rewrite(
        self, sender: str, recipient: str, header: EnvelopeHeader, message: m.Message
    ) -> m.Message:
        call_id = header.call_id
        if isinstance(message, m.Offer):
            continuity = self._tokens(
                recipient, role=CALLER, call_id=call_id, caller=self.fake(sender).public_key,
                callee=self.real_keys[recipient],
            )  # fmt: skip
            opening = Opening.fresh(continuity)
            leg = Leg(
                call_id=call_id,
                caller=sender,
                callee=recipient,
                offer=message,
                towards_callee=self._caller_agreement(
                    sender, recipient, call_id, opening, message.versions
                ),
                opening_to_callee=opening,
            )
            self.legs[call_id] = leg
            mine = leg.towards_callee
            return m.Offer(mine.commitment, message.description, mine.versions, mine.kem_key)
        found = self.legs.get(call_id)
        if found is None:
            return message
        leg = found
        if isinstance(message, m.Ringing):
            return self._answer_caller(leg, message)
        if isinstance(message, m.Reveal) and leg.reveal_to_callee is not None:
            assert leg.callee_answer is not None and leg.towards_caller is not None
            leg.keys_with_caller = leg.towards_caller.receive_reveal(
                eph_a=message.eph_a,
                continuity_a=message.continuity_a,
                caller_description=m.canonical_description(leg.offer.description),
                callee_description=m.canonical_description(leg.callee_answer.description),
            )
            if self.grind:
                self._grind_reveal(leg)
            mine = leg.reveal_to_callee
            return m.Reveal(mine.eph_a, mine.continuity_a)
        return message

    def _answer_caller(self, leg: Leg, ringing: m.Ringing) -> m.Ringing:
        """The callee answered: agree keys with it, then answer the caller (ground, if the
        attacker can compute the caller's SAS)."""
        leg.callee_answer = ringing
        leg.reveal_to_callee = leg.towards_callee.receive_answer(
            eph_b=ringing.eph_b,
            continuity_b=ringing.continuity_b,
            caller_description=m.canonical_description(leg.offer.description),
            callee_description=m.canonical_description(ringing.description),
            callee_versions=ringing.versions,
            version=ringing.version if ringing.version is not None else 0,
            kem_ciphertext=ringing.mlkem_ct,
        )
        leg.keys_with_callee = leg.towards_callee.keys()
        offer, fake_callee = leg.offer, self.fake(leg.callee).public_key
        real_caller = self.real_keys[leg.caller]
        tokens = self._tokens(
            leg.caller, role=CALLEE, call_id=leg.call_id, caller=real_caller, callee=fake_callee
        )
        version = negotiate(offer.versions, ringing.versions)
        kem_key = offer.mlkem_ek if version == 2 else b""
        answering = Answering.fresh(kem_key, tokens if tokens is not None else os.urandom(64))
        if self.grind:
            known = self._tokens(
                leg.caller, role=CALLER, call_id=leg.call_id, caller=real_caller,
                callee=fake_callee,
            )  # fmt: skip
            caller_leg = Exchange(
                call_id=leg.call_id,
                caller=real_caller,
                callee=fake_callee,
                caller_name=leg.caller,
                callee_name=leg.callee,
                caller_versions=offer.versions,
                callee_versions=ringing.versions,
                version=version,
                eph_a=b"",  # unknown until the reveal
                eph_b=b"",
                kem_key=offer.mlkem_ek,
                kem_ciphertext=b"",
                continuity_a=b"",
                continuity_b=b"",
                caller_description=m.canonical_description(offer.description),
                callee_description=m.canonical_description(ringing.description),
            )
            answering = grind_answer(
                caller_leg,
                honest=answering,
                commitment=offer.commitment,
                known_continuity=known,
                target=leg.keys_with_callee.sas.value,
                sas_bits=self.sas_bits,
                budget=self.grind,
                stats=leg.grinding,
                ways=self.answer_ways,
            )
        agreement = CalleeKeyAgreement(
            me=fake_callee,
            peer=real_caller,
            call_id=leg.call_id,
            commitment=offer.commitment,
            caller_versions=offer.versions,
            kem_key=offer.mlkem_ek,
            my_name=leg.callee,
            peer_name=leg.caller,
            retained=self.retained.get(leg.caller) if tokens is not None else None,
            rng=answering.rng(),
            sas_bits=self.sas_bits,
            versions=ringing.versions,
            encapsulate=answering.encapsulate,
        )
        answer = agreement.answer()
        assert answer.eph_b == answering.eph_b and answer.continuity_b == answering.continuity_b
        leg.towards_caller = agreement
        return m.Ringing(
            answer.eph_b,
            answer.continuity_b,
            ringing.description,
            agreement.versions,
            agreement.version,
            agreement.kem_ciphertext,
        )

    def _caller_agreement(
        self,
        caller: str,
        callee: str,
        call_id: bytes,
        opening: Opening,
        versions: tuple[int, ...],
    ) -> CallerKeyAgreement:
        """Its agreement towards the callee, making exactly ``opening`` (with the retained
        secrets only where the opening holds their tokens, else the opening's random field)."""
        me = self.fake(caller).public_key
        tokens = self._tokens(
            callee, role=CALLER, call_id=call_id, caller=me, callee=self.real_keys[callee]
        )
        return CallerKeyAgreement(
            me=me,
            peer=self.real_keys[callee],
            call_id=call_id,
            my_name=caller,
            peer_name=callee,
            retained=self.retained.get(callee) if tokens == opening.continuity_a else None,
            rng=opening.rng(),
            sas_bits=self.sas_bits,
            versions=versions,
        )

    def _grind_reveal(self, leg: Leg) -> None:
        """Replace the reveal to the callee by one that gives it the caller's SAS, if the
        commitment sent to the callee lets any through (:func:`grind_reveal`)."""
        assert leg.keys_with_caller is not None and leg.keys_with_callee is not None
        assert leg.callee_answer is not None
        stats = leg.grinding
        if leg.keys_with_caller.sas == leg.keys_with_callee.sas:
            stats.predicted_match = True  # won with its ringing (or by luck)
            return
        stats.predicted_match, stats.won_at = False, None  # a ringing ground on a wrong guess
        answer, mine = leg.callee_answer, leg.towards_callee
        callee_leg = Exchange(
            call_id=leg.call_id,
            caller=self.fake(leg.caller).public_key,
            callee=self.real_keys[leg.callee],
            caller_name=leg.caller,
            callee_name=leg.callee,
            caller_versions=mine.versions,
            callee_versions=answer.versions,
            version=answer.version if answer.version is not None else 0,
            eph_a=b"",  # the reveal being ground
            eph_b=answer.eph_b,
            kem_key=mine.kem_key,
            kem_ciphertext=answer.mlkem_ct,
            continuity_a=b"",
            continuity_b=answer.continuity_b,
            caller_description=m.canonical_description(leg.offer.description),
            callee_description=m.canonical_description(answer.description),
        )
        chosen, _ = grind_reveal(
            callee_leg,
            committed=leg.opening_to_callee,
            commitment=mine.commitment,
            target=leg.keys_with_caller.sas.value,
            sas_bits=self.sas_bits,
            budget=self.grind,
            stats=stats,
        )
        if chosen == leg.opening_to_callee:
            return
        agreement = self._caller_agreement(
            leg.caller, leg.callee, leg.call_id, chosen, mine.versions
        )
        leg.reveal_to_callee = agreement.receive_answer(
            eph_b=answer.eph_b,
            continuity_b=answer.continuity_b,
            caller_description=callee_leg.caller_description,
            callee_description=callee_leg.callee_description,
            callee_versions=answer.versions,
            version=callee_leg.version,
            kem_ciphertext=answer.mlkem_ct,
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
