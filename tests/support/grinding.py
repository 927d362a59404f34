"""A SAS-grinding man in the middle that uses only what the protocol shows it.

The attacker runs one key agreement with each side: it is the callee towards the real caller and
the caller towards the real callee. Of everything it sends, one message comes after it knows
every other input of both transcripts: its reveal to the callee. By then the caller has revealed
(so the attacker knows the caller's SAS) and the callee has answered. Were that reveal free, the
attacker would try reveals until the callee's SAS equals the caller's; the commitment in its
offer, sent before the callee answered, is what must stop it.

So :func:`grind_reveal` tries each way of changing what the attacker controls in that reveal
(its ephemeral key, its continuity field, both), and asks the callee's own code (a
``CalleeKeyAgreement`` of its own, holding the commitment it sent) whether the callee would
still accept the changed reveal. It keeps grinding the ways that get through, and gives a way up
after ``probes`` refusals. It stops at the first reveal that gives the callee the target SAS, or
when ``budget`` changed reveals were tried.

Its answer to the caller cannot be ground this way: the caller's SAS also depends on the
caller's ``eph_a`` and ``continuity_a`` (96 bytes, random on first contact), which the caller
sends only in its reveal. A 32-byte commitment cannot carry both, so a commitment that "hides
nothing" (the audit's mutation: ``commitment_of`` returns ``eph_a``) is broken where it binds,
and that is where this attacker finds it.

The callee code looks ``commitment_of`` up in ``voice.crypto.keyagreement``: a test that
monkeypatches it there breaks the real callee's check and the attacker's alike.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_base

from voice.crypto import keyagreement, keyschedule
from voice.crypto._bytes import lp, sha256
from voice.crypto.keyschedule import Exchange
from voice.crypto.sas import Sas
from voice.errors import CommitmentMismatch

EPHEMERAL = "ephemeral"
CONTINUITY = "continuity"
WAYS: tuple[frozenset[str], ...] = (
    frozenset({CONTINUITY}),
    frozenset({EPHEMERAL}),
    frozenset({EPHEMERAL, CONTINUITY}),
)
PROBES = 4  # refusals after which a way of changing the reveal is given up


@dataclass(frozen=True)
class Opening:
    """A caller's reveal together with the ephemeral secret behind it."""

    secret: bytes = dataclasses.field(repr=False)
    eph_a: bytes
    continuity_a: bytes

    @classmethod
    def fresh(cls) -> Opening:
        secret = os.urandom(32)
        return cls(secret, crypto_scalarmult_base(secret), os.urandom(64))

    def rng(self) -> Callable[[int], bytes]:
        """Randomness for ``CallerKeyAgreement`` (first contact) that makes exactly this reveal:
        the ephemeral secret, then the two continuity tokens."""
        chunks = [self.secret, self.continuity_a[:32], self.continuity_a[32:]]

        def rng(n: int) -> bytes:
            chunk = chunks.pop(0)
            assert len(chunk) == n
            return chunk

        return rng

    def changed(self, way: frozenset[str]) -> Opening:
        secret = os.urandom(32) if EPHEMERAL in way else self.secret
        eph_a = crypto_scalarmult_base(secret) if EPHEMERAL in way else self.eph_a
        continuity_a = os.urandom(64) if CONTINUITY in way else self.continuity_a
        return Opening(secret, eph_a, continuity_a)


@dataclass
class GrindStats:
    """What one grinding run did."""

    changed_tried: int = 0  # changed reveals made
    changed_accepted: int = 0  # of those checked with the callee's code, the ones it accepted
    ways_open: int = 0  # ways of changing the reveal that got through
    predicted_match: bool = False  # the reveal chosen gives the callee the target SAS


def callee_would_accept(leg: Exchange, commitment: bytes, opening: Opening) -> bool:
    """Whether the callee takes ``opening`` as the reveal for ``commitment``: the attacker asks
    the callee's own code, a ``CalleeKeyAgreement`` of its own (the check needs no secret)."""
    callee = keyagreement.CalleeKeyAgreement(
        me=leg.callee,
        peer=leg.caller,
        call_id=leg.call_id,
        commitment=commitment,
        my_name=leg.callee_name,
        peer_name=leg.caller_name,
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
    transcript = keyagreement.encode_transcript(
        call_id=leg.call_id,
        caller=leg.caller,
        callee=leg.callee,
        caller_name=leg.caller_name,
        callee_name=leg.callee_name,
        eph_a=opening.eph_a,
        eph_b=leg.eph_b,
        continuity_a=opening.continuity_a,
        continuity_b=leg.continuity_b,
        caller_description=leg.caller_description,
        callee_description=leg.callee_description,
    )
    return Sas.from_transcript_hash(sha256(transcript), sas_bits).value


def grind_reveal(
    leg: Exchange,
    *,
    committed: Opening,
    commitment: bytes,
    target: int,
    sas_bits: int,
    budget: int,
    probes: int = PROBES,
) -> tuple[Opening, GrindStats]:
    """The reveal to send to the callee: one the callee accepts, giving it the ``target`` SAS if
    the attacker can find one within ``budget`` changed reveals, else the committed one.

    ``leg`` is the callee's transcript as the attacker knows it (its ``eph_a`` and
    ``continuity_a`` are replaced by each candidate's); ``commitment`` is what the attacker
    sent in its offer, ``committed`` the reveal behind it.
    """
    stats = GrindStats()
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
            stats.predicted_match = True
            return candidate, stats
    return committed, stats


# ---- commitments broken on purpose, for the controls --------------------------------------------
# Each replaces ``voice.crypto.keyagreement.commitment_of`` (monkeypatch), where the callee's code
# looks it up. 32 bytes each, so the callee takes them as commitments.


def discloses_the_key(
    *, call_id: bytes, caller: bytes, callee: bytes, eph_a: bytes, continuity_a: bytes
) -> bytes:
    """The audit's mutation: the commitment is the ephemeral key in clear."""
    return eph_a


def binds_nothing(
    *, call_id: bytes, caller: bytes, callee: bytes, eph_a: bytes, continuity_a: bytes
) -> bytes:
    """Any reveal opens it."""
    return bytes(32)


def omits_the_key(
    *, call_id: bytes, caller: bytes, callee: bytes, eph_a: bytes, continuity_a: bytes
) -> bytes:
    """Binds everything but the ephemeral key."""
    label = lp(keyschedule.COMMIT_LABEL)
    return sha256(label + lp(call_id) + lp(caller) + lp(callee) + lp(continuity_a))


BROKEN_COMMITMENTS: dict[str, Callable[..., bytes]] = {
    "discloses_the_key": discloses_the_key,
    "binds_nothing": binds_nothing,
    "omits_the_key": omits_the_key,
}
