"""A SAS-grinding man in the middle that uses only what the protocol shows it.

The attacker runs one key agreement with each side: it is the callee towards the real caller and
the caller towards the real callee. It chooses values at two points, and grinds at both:

1. **Its ringing to the caller** (:func:`grind_answer`): its ephemeral key and its ML-KEM
   encapsulation (the ciphertext) to the caller's key. By then the callee has answered its
   offer, so the attacker knows the callee's SAS (its own reveal is fixed by its commitment) and
   grinds its ringing until the caller's SAS would equal it. It cannot compute the caller's SAS
   without the caller's ``eph_a``, which the caller sends only in its reveal, so first it tries
   to read ``eph_a`` out of the commitment (the one way a commitment can leak it: being the
   key), confirming a guess with the protocol's own ``commitment_of``. The caller's continuity
   field it can know: an attacker in the middle since the first call holds each side's retained
   secrets (``known_continuity``). Against a hiding commitment no guess confirms and there is
   nothing to grind with: every ringing gives the caller a SAS the attacker cannot predict.
2. **Its reveal to the callee** (:func:`grind_reveal`): the last message it sends, when it
   knows every other input of both transcripts. It tries each way of changing what it controls
   in that reveal (its ephemeral key, its continuity field, both) and asks the callee's own
   code (a ``CalleeKeyAgreement`` of its own, holding the commitment it sent) whether the callee
   would still accept it. It keeps grinding the ways that get through, gives a way up after
   ``probes`` refusals, and stops at a reveal that gives the callee the target SAS or after
   ``budget`` changed reveals. Its offer's version list and ML-KEM key are not in the reveal:
   the callee already encapsulated to that key, and they are bound twice (commitment and
   transcript).

The callee code looks ``commitment_of`` up in ``voice.crypto.keyagreement``: a test that
monkeypatches it there breaks the real callee's check and the attacker's alike.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base

from voice.crypto import kem, keyagreement, keyschedule
from voice.crypto._bytes import lp, sha256
from voice.crypto.keyschedule import Exchange
from voice.crypto.sas import Sas
from voice.crypto.versions import encode_list
from voice.errors import CommitmentMismatch

EPHEMERAL = "ephemeral"
CONTINUITY = "continuity"
ENCAPSULATION = "encapsulation"
WAYS: tuple[frozenset[str], ...] = (  # of changing the attacker's reveal
    frozenset({CONTINUITY}),
    frozenset({EPHEMERAL}),
    frozenset({EPHEMERAL, CONTINUITY}),
)
ANSWER_WAYS: tuple[frozenset[str], ...] = (  # of changing its ringing (its continuity field
    frozenset({ENCAPSULATION}),  # stays: a changed one would show the caller a continuity
    frozenset({EPHEMERAL}),  # warning)
    frozenset({ENCAPSULATION, EPHEMERAL}),
)
PROBES = 4  # refusals after which a way of changing the reveal is given up


def _feeder(chunks: list[bytes]) -> Callable[[int], bytes]:
    """An rng that hands out exactly ``chunks``, in order (unused trailing ones are fine)."""

    def rng(n: int) -> bytes:
        chunk = chunks.pop(0)
        assert len(chunk) == n
        return chunk

    return rng


@dataclass(frozen=True)
class Opening:
    """A caller's reveal together with the secrets behind it (its X25519 secret and ML-KEM
    seed; the seed makes the offer's key, which the reveal does not carry)."""

    secret: bytes = dataclasses.field(repr=False)
    kem_seed: bytes = dataclasses.field(repr=False)
    eph_a: bytes
    continuity_a: bytes

    @classmethod
    def fresh(cls, continuity_a: bytes | None = None) -> Opening:
        """``continuity_a``: the tokens the caller's retained secrets make (None: first
        contact, random)."""
        secret = os.urandom(32)
        continuity = continuity_a if continuity_a is not None else os.urandom(64)
        return cls(secret, os.urandom(kem.SEED_BYTES), crypto_scalarmult_base(secret), continuity)

    def rng(self) -> Callable[[int], bytes]:
        """Randomness for ``CallerKeyAgreement`` that makes exactly this reveal: the ephemeral
        secret, the ML-KEM seed, then the two continuity slots (asked for only when the caller
        holds no retained secret)."""
        return _feeder([self.secret, self.kem_seed, self.continuity_a[:32], self.continuity_a[32:]])

    def changed(self, way: frozenset[str]) -> Opening:
        secret = os.urandom(32) if EPHEMERAL in way else self.secret
        eph_a = crypto_scalarmult_base(secret) if EPHEMERAL in way else self.eph_a
        continuity_a = os.urandom(64) if CONTINUITY in way else self.continuity_a
        return Opening(secret, self.kem_seed, eph_a, continuity_a)


@dataclass(frozen=True)
class Answering:
    """A callee's ringing values together with the secrets behind them."""

    secret: bytes = dataclasses.field(repr=False)
    eph_b: bytes
    continuity_b: bytes
    kem_shared: bytes = dataclasses.field(repr=False)
    kem_ciphertext: bytes = dataclasses.field(repr=False)

    @classmethod
    def fresh(cls, kem_key: bytes, continuity_b: bytes) -> Answering:
        secret = os.urandom(32)
        shared, ciphertext = kem.encapsulate(kem_key)
        return cls(secret, crypto_scalarmult_base(secret), continuity_b, shared, ciphertext)

    def changed(self, way: frozenset[str], kem_key: bytes) -> Answering:
        secret = os.urandom(32) if EPHEMERAL in way else self.secret
        eph_b = crypto_scalarmult_base(secret) if EPHEMERAL in way else self.eph_b
        shared, ciphertext = (
            kem.encapsulate(kem_key)
            if ENCAPSULATION in way
            else (self.kem_shared, self.kem_ciphertext)
        )
        return Answering(secret, eph_b, self.continuity_b, shared, ciphertext)

    def rng(self) -> Callable[[int], bytes]:
        """Randomness for ``CalleeKeyAgreement``: the ephemeral secret, then the continuity
        slots (asked for only when the attacker holds no retained secret for the caller)."""
        return _feeder([self.secret, self.continuity_b[:32], self.continuity_b[32:]])

    def encapsulate(self, kem_key: bytes) -> tuple[bytes, bytes]:
        """Stands in for the encapsulation: this ciphertext (a copy of the secret, which the
        agreement wipes once used)."""
        return bytes(bytearray(self.kem_shared)), self.kem_ciphertext


@dataclass
class GrindStats:
    """What one grinding run did."""

    opened_commitment: bool = False  # the attacker read the caller's key out of its commitment
    answers_tried: int = 0  # ringings to the caller made while grinding
    answer_way: frozenset[str] | None = None  # how the ringing that won was changed
    changed_tried: int = 0  # changed reveals made
    changed_accepted: int = 0  # of those checked with the callee's code, the ones it accepted
    ways_open: int = 0  # ways of changing the reveal that got through
    predicted_match: bool = False  # the attacker's choices give both users the same SAS
    won_at: str | None = None  # "answer" or "reveal": where it got the match


def sas_of(leg: Exchange, sas_bits: int) -> int:
    """The SAS of the transcript ``leg`` (every input known)."""
    fields = {
        f.name: getattr(leg, f.name) for f in dataclasses.fields(leg)
    }  # not asdict: no copies
    transcript = keyagreement.encode_transcript(**fields)
    return Sas.from_transcript_hash(sha256(transcript), sas_bits).value


def read_key_from_commitment(
    leg: Exchange, commitment: bytes, known_continuity: bytes | None
) -> bytes | None:
    """The caller's ``eph_a``, if the commitment gives it away: the guess "the commitment is the
    key", confirmed with the protocol's ``commitment_of`` (as the callee's check would)."""
    if known_continuity is None:
        return None
    guess = commitment
    confirmed = keyagreement.commitment_of(
        call_id=leg.call_id,
        caller=leg.caller,
        callee=leg.callee,
        versions=leg.caller_versions,
        kem_key=leg.kem_key,
        eph_a=guess,
        continuity_a=known_continuity,
    )
    return guess if confirmed == commitment else None


def grind_answer(
    leg: Exchange,
    *,
    honest: Answering,
    commitment: bytes,
    known_continuity: bytes | None,
    target: int,
    sas_bits: int,
    budget: int,
    stats: GrindStats,
    ways: tuple[frozenset[str], ...] = ANSWER_WAYS,
) -> Answering:
    """The ringing to send to the caller: one that gives it the ``target`` SAS if the attacker
    can compute the caller's SAS and finds one within ``budget`` tries, else ``honest``.

    ``leg`` is the caller's transcript as the attacker knows it before the reveal (its own
    values and ``eph_a`` are filled in per candidate).
    """
    eph_a = read_key_from_commitment(leg, commitment, known_continuity)
    if eph_a is None or known_continuity is None:
        return honest
    stats.opened_commitment = True

    def caller_sas(candidate: Answering) -> int:
        filled = dataclasses.replace(
            leg,
            eph_a=eph_a,
            continuity_a=known_continuity,
            eph_b=candidate.eph_b,
            continuity_b=candidate.continuity_b,
            kem_ciphertext=candidate.kem_ciphertext,
        )
        return sas_of(filled, sas_bits)

    candidate = honest
    while stats.answers_tried < budget:
        way = ways[stats.answers_tried % len(ways)]
        stats.answers_tried += 1
        candidate = honest.changed(way, leg.kem_key)
        if caller_sas(candidate) == target:
            stats.answer_way, stats.won_at, stats.predicted_match = way, "answer", True
            return candidate
    return honest


def callee_would_accept(leg: Exchange, commitment: bytes, opening: Opening) -> bool:
    """Whether the callee takes ``opening`` as the reveal for ``commitment``: the attacker asks
    the callee's own code, a ``CalleeKeyAgreement`` of its own. The check needs no secret: its
    encapsulation stands in with the callee's real ciphertext and a dummy secret (the reveal is
    checked before any secret is used), which also spares an ML-KEM encapsulation per probe."""
    callee = keyagreement.CalleeKeyAgreement(
        me=leg.callee,
        peer=leg.caller,
        call_id=leg.call_id,
        commitment=commitment,
        caller_versions=leg.caller_versions,
        kem_key=leg.kem_key,
        my_name=leg.callee_name,
        peer_name=leg.caller_name,
        versions=leg.callee_versions,
        encapsulate=lambda key: (bytes(bytearray(32)), leg.kem_ciphertext),
    )
    callee.answer()
    try:
        callee.receive_reveal(
            eph_a=opening.eph_a,
            continuity_a=opening.continuity_a,
            caller_description=leg.caller_description,
            callee_description=leg.callee_description,
        )
    except CommitmentMismatch:
        return False
    return True


def callee_sas(leg: Exchange, opening: Opening, sas_bits: int) -> int:
    """The SAS the callee will compute if it receives ``opening`` as the reveal."""
    filled = dataclasses.replace(leg, eph_a=opening.eph_a, continuity_a=opening.continuity_a)
    return sas_of(filled, sas_bits)


def grind_reveal(
    leg: Exchange,
    *,
    committed: Opening,
    commitment: bytes,
    target: int,
    sas_bits: int,
    budget: int,
    probes: int = PROBES,
    stats: GrindStats | None = None,
) -> tuple[Opening, GrindStats]:
    """The reveal to send to the callee: one the callee accepts, giving it the ``target`` SAS if
    the attacker can find one within ``budget`` changed reveals, else the committed one.

    ``leg`` is the callee's transcript as the attacker knows it (its ``eph_a`` and
    ``continuity_a`` are replaced by each candidate's); ``commitment`` is what the attacker
    sent in its offer, ``committed`` the reveal behind it.
    """
    stats = stats if stats is not None else GrindStats()
    if callee_sas(leg, committed, sas_bits) == target:
        stats.predicted_match = True
        return committed, stats
    ways = list(WAYS)
    refused = dict.fromkeys(WAYS, 0)
    opened: set[frozenset[str]] = set()
    while ways and stats.changed_tried < budget:
        way = ways[stats.changed_tried % len(ways)]
        candidate = committed.changed(way)
        stats.changed_tried += 1
        if way in opened and callee_sas(leg, candidate, sas_bits) != target:
            continue  # this way got through before: only a predicted match is worth checking
        if not callee_would_accept(leg, commitment, candidate):
            refused[way] += 1
            if way not in opened and refused[way] >= probes:
                ways.remove(way)
            continue
        stats.changed_accepted += 1
        opened.add(way)
        stats.ways_open = len(opened)
        if callee_sas(leg, candidate, sas_bits) == target:
            stats.predicted_match, stats.won_at = True, "reveal"
            return candidate, stats
    return committed, stats


# ---- commitments broken on purpose, for the controls --------------------------------------------
# Each replaces ``voice.crypto.keyagreement.commitment_of`` (monkeypatch), where the callee's code
# looks it up. 32 bytes each, so the callee takes them as commitments.


def discloses_the_key(
    *,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
    versions: tuple[int, ...],
    kem_key: bytes,
    eph_a: bytes,
    continuity_a: bytes,
) -> bytes:
    """The audit's mutation: the commitment is the ephemeral key in clear."""
    return eph_a


def binds_nothing(
    *,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
    versions: tuple[int, ...],
    kem_key: bytes,
    eph_a: bytes,
    continuity_a: bytes,
) -> bytes:
    """Any reveal opens it."""
    return bytes(32)


def omits_the_key(
    *,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
    versions: tuple[int, ...],
    kem_key: bytes,
    eph_a: bytes,
    continuity_a: bytes,
) -> bytes:
    """Binds everything but the ephemeral key."""
    label = lp(keyschedule.COMMIT_LABEL)
    ids = lp(call_id) + lp(caller) + lp(callee)
    return sha256(label + ids + lp(encode_list(versions)) + lp(kem_key) + lp(continuity_a))


BROKEN_COMMITMENTS: dict[str, Callable[..., bytes]] = {
    "discloses_the_key": discloses_the_key,
    "binds_nothing": binds_nothing,
    "omits_the_key": omits_the_key,
}
