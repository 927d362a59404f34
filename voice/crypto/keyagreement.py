"""Per-call key agreement: committed ephemeral X25519, transcript hash, HKDF, SAS, continuity.

Messages (each travels inside a sealed envelope; the call layer encodes them)::

    offer   caller -> callee   commitment (32) [+ caller_description]
    answer  callee -> caller   eph_b (32), continuity_b (64) [+ callee_description]
    reveal  caller -> callee   eph_a (32), continuity_a (64)

    commitment = SHA-256(lp("voice commit v1") || lp(call_id) || lp(caller) || lp(callee)
                         || lp(eph_a) || lp(continuity_a))

The caller is bound to ``eph_a`` before it sees ``eph_b``, and the callee sends ``eph_b`` before
it sees ``eph_a``: nobody can choose a key to steer the SAS, so a man-in-the-middle matches the
two SAS with probability 2^-bits. Each side's description must be fixed before it learns the
peer's ephemeral key (caller's in the offer, callee's in the answer), or a MITM could grind it.

Key schedule (see kdf.py for ``derive``)::

    transcript = lp("voice transcript v2") || lp(call_id) || lp(caller) || lp(callee)
                 || lp(caller_name) || lp(callee_name)
                 || lp(eph_a) || lp(eph_b) || lp(continuity_a) || lp(continuity_b)
                 || lp(caller_description) || lp(callee_description)
    (names: UTF-8 usernames, the caller's own login and the name it dialed on the caller's side,
    the server's ``from`` and its own login on the callee's side: a relabelled call gives two
    different transcripts, so different keys and SASes)
    th   = SHA-256(transcript)
    dh   = X25519(eph_a_secret, eph_b) = X25519(eph_b_secret, eph_a)   (all-zero: refused)
    ikm  = dh || rs        (rs = the matched retained secret, or empty; see continuity.py)
    srtp = derive(ikm, <label per cipher and direction>, th, 44 or 30)
    next_retained = derive(ikm, "retained secret", th, 32);  SAS from th alone (sas.py)

Ephemeral secrets are zeroed as soon as the shared secret is computed (``erase()`` zeroes one a
call never used), and ``CallKeys.erase()``
zeroes the derived keys: best effort only (CPython may have copied them; see ``_bytes.wipe``).
"""

from __future__ import annotations

import os

from voice.crypto._bytes import constant_time_equal, wipe
from voice.crypto.continuity import CALLEE, CALLER, RetainedSecrets, continuity_field
from voice.crypto.keyschedule import (
    SMALL_ORDER_POINTS,
    Answer,
    CallKeys,
    Exchange,
    Reveal,
    Rng,
    agree,
    check_ids,
    commitment_of,
    encode_transcript,
    new_ephemeral,
    x25519_shared,
)
from voice.crypto.sas import DEFAULT_SAS_BITS
from voice.errors import BadPublicKey, CommitmentMismatch, KeyAgreementError

__all__ = [
    "SMALL_ORDER_POINTS",
    "Answer",
    "CallKeys",
    "CalleeKeyAgreement",
    "CallerKeyAgreement",
    "Reveal",
    "commitment_of",
    "encode_transcript",
    "x25519_shared",
]


class CallerKeyAgreement:
    """The caller's side: offer (commitment) -> receive_answer -> reveal -> keys()."""

    def __init__(
        self,
        *,
        me: bytes,
        peer: bytes,
        call_id: bytes,
        my_name: str,
        peer_name: str,
        retained: RetainedSecrets | None = None,
        rng: Rng = os.urandom,
        sas_bits: int = DEFAULT_SAS_BITS,
    ) -> None:
        """``my_name``: our own login; ``peer_name``: the username we dialed."""
        check_ids(me, peer, call_id, my_name, peer_name)
        self._me, self._peer, self._call_id = me, peer, call_id
        self._my_name, self._peer_name = my_name, peer_name
        self._retained, self._sas_bits = retained, sas_bits
        self._secret: bytes | None
        self._secret, self.eph_a = new_ephemeral(rng)
        self.continuity_a = continuity_field(
            retained, role=CALLER, call_id=call_id, caller=me, callee=peer, rng=rng
        )
        self.commitment: bytes = commitment_of(
            call_id=call_id,
            caller=me,
            callee=peer,
            eph_a=self.eph_a,
            continuity_a=self.continuity_a,
        )
        self._keys: CallKeys | None = None

    def receive_answer(
        self,
        *,
        eph_b: bytes,
        continuity_b: bytes,
        caller_description: bytes,
        callee_description: bytes,
    ) -> Reveal:
        """Compute the call keys from the callee's answer; return what to send in the reveal.

        Raises BadPublicKey for a bad ``eph_b`` (the agreement is then dead).
        """
        secret = self._secret
        if secret is None:
            raise KeyAgreementError("receive_answer() was already called (or erase())")
        self._secret = None
        try:
            if eph_b == self.eph_a:
                raise BadPublicKey("the peer echoed our ephemeral key")
            dh = x25519_shared(secret, eph_b)
        finally:
            wipe(secret)
        self._keys = agree(
            Exchange(
                call_id=self._call_id,
                caller=self._me,
                callee=self._peer,
                caller_name=self._my_name,
                callee_name=self._peer_name,
                eph_a=self.eph_a,
                eph_b=eph_b,
                continuity_a=self.continuity_a,
                continuity_b=continuity_b,
                caller_description=caller_description,
                callee_description=callee_description,
            ),
            role=CALLER,
            dh=dh,
            retained=self._retained,
            sas_bits=self._sas_bits,
        )
        return Reveal(eph_a=self.eph_a, continuity_a=self.continuity_a)

    def keys(self) -> CallKeys:
        if self._keys is None:
            raise KeyAgreementError("keys() before receive_answer()")
        return self._keys

    def erase(self) -> None:
        """The call ended: zero the ephemeral secret if no answer used it; the agreement dies."""
        secret, self._secret = self._secret, None
        if secret is not None:
            wipe(secret)


class CalleeKeyAgreement:
    """The callee's side: offer's commitment -> answer() -> receive_reveal() -> keys."""

    def __init__(
        self,
        *,
        me: bytes,
        peer: bytes,
        call_id: bytes,
        commitment: bytes,
        my_name: str,
        peer_name: str,
        retained: RetainedSecrets | None = None,
        rng: Rng = os.urandom,
        sas_bits: int = DEFAULT_SAS_BITS,
    ) -> None:
        """``my_name``: our own login; ``peer_name``: who the server says sent the offer."""
        check_ids(me, peer, call_id, my_name, peer_name)
        if len(commitment) != 32:
            raise CommitmentMismatch("a commitment is 32 bytes")
        self._me, self._peer, self._call_id = me, peer, call_id
        self._my_name, self._peer_name = my_name, peer_name
        self._commitment, self._retained, self._sas_bits = commitment, retained, sas_bits
        self._rng = rng
        self._secret: bytes | None = None
        self._answer: Answer | None = None
        self._done = False

    def answer(self) -> Answer:
        """Our ephemeral key and continuity tokens (the same object if called again)."""
        if self._answer is None:
            self._secret, eph_b = new_ephemeral(self._rng)
            continuity_b = continuity_field(
                self._retained,
                role=CALLEE,
                call_id=self._call_id,
                caller=self._peer,
                callee=self._me,
                rng=self._rng,
            )
            self._answer = Answer(eph_b=eph_b, continuity_b=continuity_b)
        return self._answer

    def erase(self) -> None:
        """The call ended: zero the ephemeral secret if no reveal used it; the agreement dies."""
        self._done = True
        secret, self._secret = self._secret, None
        if secret is not None:
            wipe(secret)

    def receive_reveal(
        self,
        *,
        eph_a: bytes,
        continuity_a: bytes,
        caller_description: bytes,
        callee_description: bytes,
    ) -> CallKeys:
        """Check the reveal against the commitment and derive the keys.

        Raises CommitmentMismatch or BadPublicKey; after either, the agreement is dead.
        """
        if self._answer is None or self._done:
            raise KeyAgreementError("receive_reveal() needs answer() first, and runs once")
        self._done = True
        secret = self._secret
        assert secret is not None
        self._secret = None
        try:
            expected = commitment_of(
                call_id=self._call_id,
                caller=self._peer,
                callee=self._me,
                eph_a=eph_a,
                continuity_a=continuity_a,
            )
            if not constant_time_equal(expected, self._commitment):
                raise CommitmentMismatch("the revealed key does not match the commitment")
            if eph_a == self._answer.eph_b:
                raise BadPublicKey("the peer echoed our ephemeral key")
            dh = x25519_shared(secret, eph_a)
        finally:
            wipe(secret)
        return agree(
            Exchange(
                call_id=self._call_id,
                caller=self._peer,
                callee=self._me,
                caller_name=self._peer_name,
                callee_name=self._my_name,
                eph_a=eph_a,
                eph_b=self._answer.eph_b,
                continuity_a=continuity_a,
                continuity_b=self._answer.continuity_b,
                caller_description=caller_description,
                callee_description=callee_description,
            ),
            role=CALLEE,
            dh=dh,
            retained=self._retained,
            sas_bits=self._sas_bits,
        )
