"""Per-call key agreement, version 2: committed X25519 + ML-KEM-768, transcript, HKDF, SAS.

Messages (each travels inside a sealed envelope; the call layer encodes them)::

    offer   caller -> callee   commitment (32), versions_a, kem_key (1184)  [+ caller_description]
    answer  callee -> caller   eph_b (32), continuity_b (64), versions_b, version,
                               kem_ciphertext (1088)                         [+ callee_description]
    reveal  caller -> callee   eph_a (32), continuity_a (64)

    commitment = SHA-256(lp("voice commit v2") || lp(call_id) || lp(caller) || lp(callee)
                         || lp(versions_a) || lp(kem_key) || lp(eph_a) || lp(continuity_a))

``kem_key`` is the caller's fresh ML-KEM-768 encapsulation key (empty if it does not offer
version 2), ``kem_ciphertext`` the callee's encapsulation to it (empty unless version 2 is
chosen; version 1, X25519 only, is never offered by a phone). The callee picks ``version`` =
the highest in both lists (versions.py); the caller refuses any other.

The caller is bound to everything it sends (and to ``eph_a``, ``continuity_a``) before it sees
anything of the callee's; the callee sends all of its values, the ML-KEM ciphertext included,
before it sees ``eph_a``. So the last party to choose (the callee) cannot predict the SAS, and
the party that learns everything first (the caller) can no longer choose: a man-in-the-middle
matches the two SAS with probability 2^-bits (docs/protocol.md, Part 2, section 4). Each side's
description must be fixed before it learns the peer's ephemeral key (the caller's in the offer,
the callee's in the answer), or a MITM could grind it.

Key schedule (see kdf.py for ``derive``, keyschedule.py for the transcript's byte layout)::

    transcript = lp("voice transcript v3") || call_id, caller, callee, caller_name, callee_name,
                 versions_a, versions_b, version, eph_a, eph_b, kem_key, kem_ciphertext,
                 continuity_a, continuity_b, caller_description, callee_description (each lp)
    th   = SHA-256(transcript)
    dh   = X25519(eph_a_secret, eph_b) = X25519(eph_b_secret, eph_a)   (all-zero: refused)
    ss   = ML-KEM-768 shared secret (version 2; empty in version 1)
    ikm  = dh || ss || rs  (rs = the matched retained secret, or empty; see continuity.py)
    srtp = derive(ikm, <label per cipher and direction>, th, 44 or 30)
    next_retained = derive(ikm, "retained secret", th, 32);  SAS from th alone (sas.py)

The keys need both ``dh`` and ``ss``: a recording stays secret while either X25519 or ML-KEM
holds. Secrets are zeroed as soon as they are used (the X25519 ephemeral secrets, the ML-KEM
seed, the callee's ML-KEM shared secret kept from ringing to reveal; the caller's ML-KEM key
lives in OpenSSL, which cleanses it when the agreement drops it), ``erase()`` does the same for
those a call never used, and ``CallKeys.erase()`` zeroes the derived keys: best effort only
(CPython, OpenSSL and libsodium may have copied them; see ``_bytes.wipe``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from voice.crypto import kem
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
from voice.crypto.versions import DEFAULT_VERSIONS, HYBRID, check_list, negotiate, supported_list
from voice.errors import BadPublicKey, CommitmentMismatch, KeyAgreementError, UnsupportedVersion

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
    """The caller's side: offer (commitment, versions, kem_key) -> receive_answer -> reveal ->
    keys()."""

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
        versions: Sequence[int] = DEFAULT_VERSIONS,
    ) -> None:
        """``my_name``: our own login; ``peer_name``: the username we dialed; ``versions``: the
        key-agreement versions we offer (and accept)."""
        check_ids(me, peer, call_id, my_name, peer_name)
        self.versions = supported_list(versions)
        self._me, self._peer, self._call_id = me, peer, call_id
        self._my_name, self._peer_name = my_name, peer_name
        self._retained, self._sas_bits = retained, sas_bits
        self._secret: bytes | None
        self._secret, self.eph_a = new_ephemeral(rng)
        self._kem_private: kem.DecapsulationKey | None = None
        self.kem_key = b""
        if HYBRID in self.versions:
            self._kem_private, self.kem_key = kem.generate(rng)
        self.continuity_a = continuity_field(
            retained, role=CALLER, call_id=call_id, caller=me, callee=peer, rng=rng
        )
        self.commitment: bytes = commitment_of(
            call_id=call_id,
            caller=me,
            callee=peer,
            versions=self.versions,
            kem_key=self.kem_key,
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
        callee_versions: Sequence[int],
        version: int,
        kem_ciphertext: bytes,
    ) -> Reveal:
        """Compute the call keys from the callee's answer; return what to send in the reveal.

        Raises UnsupportedVersion if ``version`` is not the best one both lists hold (a
        downgrade), BadPublicKey for a bad ``eph_b`` or ciphertext; the agreement is then dead.
        """
        secret, private = self._secret, self._kem_private
        if secret is None:
            raise KeyAgreementError("receive_answer() was already called (or erase())")
        self._secret = self._kem_private = None  # dropped: OpenSSL frees and cleanses it
        try:
            try:
                theirs = check_list(tuple(callee_versions))
            except ValueError:
                raise UnsupportedVersion("the callee's version list is malformed") from None
            if version != negotiate(self.versions, theirs):
                raise UnsupportedVersion(
                    f"the callee chose version {version}, not the best one both of us support"
                )
            if eph_b == self.eph_a:
                raise BadPublicKey("the peer echoed our ephemeral key")
            if version == HYBRID:
                assert private is not None
                kem_shared = kem.decapsulate(private, kem_ciphertext)
            elif kem_ciphertext:
                raise BadPublicKey(f"version {version} carries no ML-KEM ciphertext")
            else:
                kem_shared = b""
            try:
                dh = x25519_shared(secret, eph_b)
            except BadPublicKey:
                wipe(kem_shared)
                raise
        finally:
            wipe(secret)
            del private
        self._keys = agree(
            Exchange(
                call_id=self._call_id,
                caller=self._me,
                callee=self._peer,
                caller_name=self._my_name,
                callee_name=self._peer_name,
                caller_versions=self.versions,
                callee_versions=theirs,
                version=version,
                eph_a=self.eph_a,
                eph_b=eph_b,
                kem_key=self.kem_key,
                kem_ciphertext=kem_ciphertext,
                continuity_a=self.continuity_a,
                continuity_b=continuity_b,
                caller_description=caller_description,
                callee_description=callee_description,
            ),
            role=CALLER,
            dh=dh,
            kem_shared=kem_shared,
            retained=self._retained,
            sas_bits=self._sas_bits,
        )
        return Reveal(eph_a=self.eph_a, continuity_a=self.continuity_a)

    def keys(self) -> CallKeys:
        if self._keys is None:
            raise KeyAgreementError("keys() before receive_answer()")
        return self._keys

    def erase(self) -> None:
        """The call ended: zero the X25519 secret and drop the ML-KEM key if no answer used
        them; the agreement dies."""
        secret, self._secret = self._secret, None
        self._kem_private = None
        if secret is not None:
            wipe(secret)


class CalleeKeyAgreement:
    """The callee's side: the offer (commitment, versions, kem_key) -> answer() ->
    receive_reveal() -> keys."""

    def __init__(
        self,
        *,
        me: bytes,
        peer: bytes,
        call_id: bytes,
        commitment: bytes,
        caller_versions: Sequence[int],
        kem_key: bytes,
        my_name: str,
        peer_name: str,
        retained: RetainedSecrets | None = None,
        rng: Rng = os.urandom,
        sas_bits: int = DEFAULT_SAS_BITS,
        versions: Sequence[int] = DEFAULT_VERSIONS,
        encapsulate: kem.Encapsulate = kem.encapsulate,
    ) -> None:
        """``my_name``: our own login; ``peer_name``: who the server says sent the offer;
        ``caller_versions`` and ``kem_key``: the offer's, as received; ``versions``: ours.

        Raises UnsupportedVersion when the caller offers no version we support (an offer
        without a list comes from a phone older than version 2).
        """
        check_ids(me, peer, call_id, my_name, peer_name)
        if len(commitment) != 32:
            raise CommitmentMismatch("a commitment is 32 bytes")
        self.versions = supported_list(versions)
        offered = tuple(caller_versions)
        try:
            self.caller_versions = check_list(offered) if offered else ()
        except ValueError:
            raise UnsupportedVersion("the caller's version list is malformed") from None
        self.version = negotiate(self.caller_versions, self.versions)
        self._me, self._peer, self._call_id = me, peer, call_id
        self._my_name, self._peer_name = my_name, peer_name
        self._commitment, self._retained, self._sas_bits = commitment, retained, sas_bits
        self._kem_key = kem_key
        self._rng, self._encapsulate = rng, encapsulate
        self._secret: bytes | None = None
        self._kem_shared: bytes | None = None
        self._answer: Answer | None = None
        self.kem_ciphertext = b""
        self._done = False

    def answer(self) -> Answer:
        """Our ephemeral key, continuity tokens and (version 2) the encapsulation to the
        caller's ML-KEM key; the same object if called again. Raises BadPublicKey for a
        malformed ML-KEM key (the agreement is then dead)."""
        if self._answer is None:
            if self._done:
                raise KeyAgreementError("answer() after erase()")
            if self.version == HYBRID:
                try:
                    self._kem_shared, self.kem_ciphertext = self._encapsulate(self._kem_key)
                except BadPublicKey:
                    self._done = True
                    raise
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
        """The call ended: zero the secrets no reveal used; the agreement dies."""
        self._done = True
        secret, self._secret = self._secret, None
        shared, self._kem_shared = self._kem_shared, None
        for s in (secret, shared):
            if s is not None:
                wipe(s)

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
        secret, kem_shared = self._secret, self._kem_shared
        assert secret is not None
        self._secret = self._kem_shared = None
        try:
            expected = commitment_of(
                call_id=self._call_id,
                caller=self._peer,
                callee=self._me,
                versions=self.caller_versions,
                kem_key=self._kem_key,
                eph_a=eph_a,
                continuity_a=continuity_a,
            )
            if not constant_time_equal(expected, self._commitment):
                raise CommitmentMismatch("the revealed key does not match the commitment")
            if eph_a == self._answer.eph_b:
                raise BadPublicKey("the peer echoed our ephemeral key")
            dh = x25519_shared(secret, eph_a)
        except BaseException:
            if kem_shared is not None:
                wipe(kem_shared)
            raise
        finally:
            wipe(secret)
        return agree(
            Exchange(
                call_id=self._call_id,
                caller=self._peer,
                callee=self._me,
                caller_name=self._peer_name,
                callee_name=self._my_name,
                caller_versions=self.caller_versions,
                callee_versions=self.versions,
                version=self.version,
                eph_a=eph_a,
                eph_b=self._answer.eph_b,
                kem_key=self._kem_key,
                kem_ciphertext=self.kem_ciphertext,
                continuity_a=continuity_a,
                continuity_b=self._answer.continuity_b,
                caller_description=caller_description,
                callee_description=callee_description,
            ),
            role=CALLEE,
            dh=dh,
            kem_shared=kem_shared or b"",
            retained=self._retained,
            sas_bits=self._sas_bits,
        )
