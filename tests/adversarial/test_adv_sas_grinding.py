"""Attack 1.2, protocol level: a man in the middle grinds the SAS; the commitment stops it.

Two honest parties run the real call messages (voice.call.messages) inside real sealed envelopes
(voice.crypto.envelope) with the real committed hybrid key agreement (X25519 + ML-KEM-768,
version 2), exactly the sequence the call controller runs (offer, ringing, reveal). Between
them sits :class:`tests.adversarial.mitm.Mitm`: it substituted its own identity for both users
(first contact), opens and re-seals every envelope, and runs its own agreement with each side.
It knows only what it relays, and it grinds everything it chooses (:mod:`tests.support.grinding`):
its ringing to the caller (its ML-KEM encapsulation and ephemeral key) once the callee's answer
fixed the callee's SAS, and its reveal to the callee once the caller's reveal fixed the
caller's SAS, each candidate checked with the protocol's own commitment function.

The strongest form of the attacker is the one measured: it has sat in the middle since the
users' first call and they never compared the SAS, so it holds both users' retained secrets and
knows their continuity fields; the only thing the caller hides from it is ``eph_a``, behind the
commitment. With an 8-bit test SAS the two SASes must match no more often than 2^-8: we run
1,000 calls and require the number of matches to stay under the binomial bound (false alarm
below 1e-6). The controls break ``commitment_of`` on purpose: with the key in clear the same
attacker wins nearly every call by grinding its ringing (the encapsulation alone suffices);
on first contact, where it cannot know the caller's continuity field, it wins by grinding its
reveal instead; and two more broken commitments let that reveal through too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest

from tests.adversarial.mitm import Mitm
from tests.support.grinding import (
    ANSWER_WAYS,
    BROKEN_COMMITMENTS,
    ENCAPSULATION,
    PROBES,
    WAYS,
    GrindStats,
)
from voice.call import messages as m
from voice.crypto import keyagreement
from voice.crypto.continuity import ContinuityResult, RetainedSecrets
from voice.crypto.envelope import EnvelopeHeader, open_envelope, seal
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement

BITS = 8
TRIALS = 1_000
GRIND = 4_096  # tries per call and grinding point: (255/256)^4096 < 1e-7 to miss a way in
CONTROL_TRIALS = 50
RINGING_CONTROL_TRIALS = 20  # each grinds ~256 ML-KEM encapsulations: the slow control
OTHER_CONTROL_TRIALS = 40
FALSE_ALARM = 1e-6


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    total = 0.0
    for i in range(k, n + 1):
        log_term = (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
        )
        term = math.exp(log_term)
        total += term
        if term < 1e-300:
            break
    return total


def max_matches(n: int, p: float, alpha: float = FALSE_ALARM) -> int:
    """The largest match count an honest 2^-bits process exceeds with probability <= alpha."""
    k = 0
    while binomial_tail(n, p, k + 1) > alpha:
        k += 1
    return k


def description() -> dict[str, object]:
    """A media description of the real shape (voice.media.session.local_description)."""
    return {
        "ice": {
            "ufrag": os.urandom(4).hex(),
            "pwd": os.urandom(12).hex(),
            "candidates": ["1 1 udp 2130706431 127.0.0.1 40000 typ host"],
        },
        "ssrc": int.from_bytes(os.urandom(4), "big"),
        "codec": {"name": "opus", "clock_rate": 48000, "channels": 1, "payload_type": 111},
    }


@dataclass
class Outcome:
    caller_sas: int
    callee_sas: int
    attacker_caller_sas: int
    attacker_callee_sas: int
    grinding: GrindStats
    continuity: tuple[ContinuityResult, ContinuityResult]


class Parties:
    """alice and bob; ``since_first_call``: the attacker holds the retained secrets each of
    them keeps for the other (it was in the middle of their earlier calls)."""

    def __init__(self, mitm: Mitm, *, since_first_call: bool) -> None:
        self.alice = Identity.generate()
        self.bob = Identity.generate()
        self.seq = 0
        self.retained = {"alice": RetainedSecrets(), "bob": RetainedSecrets()}
        if since_first_call:
            for user in self.retained:
                self.retained[user] = RetainedSecrets(os.urandom(32), os.urandom(32))
            mitm.retained.update(self.retained)

    def envelope(self, sender: Identity, to: bytes, call_id: bytes, msg: m.Message) -> bytes:
        self.seq += 1
        header = EnvelopeHeader(call_id, self.seq, 1_700_000_000_000 + self.seq)
        return seal(sender, to, header, m.encode(msg))

    def one_call(self, mitm: Mitm) -> Outcome:
        """alice calls bob through the attacker: everything goes via Mitm.relay."""
        real = {"alice": self.alice.public_key, "bob": self.bob.public_key}
        mitm.real_keys.update(real)
        bob_as_looked_up = mitm.fake("bob").public_key  # the lookup answer alice gets
        call_id = os.urandom(16)
        alice_desc, bob_desc = description(), description()
        caller = CallerKeyAgreement(
            me=self.alice.public_key,
            peer=bob_as_looked_up,
            call_id=call_id,
            my_name="alice",
            peer_name="bob",
            retained=self.retained["alice"],
            sas_bits=BITS,
        )
        offer = m.Offer(caller.commitment, alice_desc, caller.versions, caller.kem_key)
        sealed = self.envelope(self.alice, bob_as_looked_up, call_id, offer)
        at_bob = open_envelope(self.bob, self._relay(mitm, "alice", "bob", sealed))
        got_offer = m.decode(at_bob.payload)
        assert isinstance(got_offer, m.Offer)
        callee = CalleeKeyAgreement(
            me=self.bob.public_key,
            peer=at_bob.sender_key,  # what bob pins for "alice" on first contact
            call_id=call_id,
            commitment=got_offer.commitment,
            caller_versions=got_offer.versions,
            kem_key=got_offer.mlkem_ek,
            my_name="bob",
            peer_name="alice",
            retained=self.retained["bob"],
            sas_bits=BITS,
        )
        answer = callee.answer()
        ringing = m.Ringing(
            answer.eph_b,
            answer.continuity_b,
            bob_desc,
            callee.versions,
            callee.version,
            callee.kem_ciphertext,
        )
        sealed = self.envelope(self.bob, at_bob.sender_key, call_id, ringing)
        at_alice = open_envelope(self.alice, self._relay(mitm, "bob", "alice", sealed))
        got_ringing = m.decode(at_alice.payload)
        assert isinstance(got_ringing, m.Ringing) and got_ringing.version is not None
        assert at_alice.sender_key == bob_as_looked_up  # the pinned key checks out
        reveal = caller.receive_answer(
            eph_b=got_ringing.eph_b,
            continuity_b=got_ringing.continuity_b,
            caller_description=m.canonical_description(alice_desc),
            callee_description=m.canonical_description(got_ringing.description),
            callee_versions=got_ringing.versions,
            version=got_ringing.version,
            kem_ciphertext=got_ringing.mlkem_ct,
        )
        sealed_reveal = self.envelope(
            self.alice, bob_as_looked_up, call_id, m.Reveal(reveal.eph_a, reveal.continuity_a)
        )
        at_bob2 = open_envelope(self.bob, self._relay(mitm, "alice", "bob", sealed_reveal))
        got_reveal = m.decode(at_bob2.payload)
        assert isinstance(got_reveal, m.Reveal)
        bob_keys = callee.receive_reveal(
            eph_a=got_reveal.eph_a,
            continuity_a=got_reveal.continuity_a,
            caller_description=m.canonical_description(got_offer.description),
            callee_description=m.canonical_description(bob_desc),
        )
        leg = mitm.legs[call_id]
        assert leg.keys_with_caller is not None and leg.keys_with_callee is not None
        # The attacker's keys work: each user's audio would decrypt on its leg.
        assert leg.keys_with_caller.srtp_gcm_rx == caller.keys().srtp_gcm_tx
        assert leg.keys_with_callee.srtp_gcm_tx == bob_keys.srtp_gcm_rx
        return Outcome(
            caller_sas=caller.keys().sas.value,
            callee_sas=bob_keys.sas.value,
            attacker_caller_sas=leg.keys_with_caller.sas.value,
            attacker_callee_sas=leg.keys_with_callee.sas.value,
            grinding=leg.grinding,
            continuity=(caller.keys().continuity, bob_keys.continuity),
        )

    @staticmethod
    def _relay(mitm: Mitm, sender: str, to: str, body: bytes) -> bytes:
        out = mitm.relay(sender, to, body)
        assert out is not None
        return out


def run(
    trials: int, *, since_first_call: bool, answer_ways: tuple[frozenset[str], ...] = ANSWER_WAYS
) -> tuple[int, list[Outcome]]:
    mitm = Mitm(real_keys={}, sas_bits=BITS, grind=GRIND, answer_ways=answer_ways)
    parties = Parties(mitm, since_first_call=since_first_call)
    outcomes = [parties.one_call(mitm) for _ in range(trials)]
    # The attacker really is in the middle of every call: each user's SAS is its leg's SAS ...
    assert all(o.caller_sas == o.attacker_caller_sas for o in outcomes)
    assert all(o.callee_sas == o.attacker_callee_sas for o in outcomes)
    # ... and it knows every input of both SASes by its last message: it predicts each match.
    assert all(o.grinding.predicted_match == (o.caller_sas == o.callee_sas) for o in outcomes)
    if since_first_call:  # neither user sees a continuity warning: the chain is the attacker's
        assert all(o.continuity == (ContinuityResult.MATCH,) * 2 for o in outcomes)
    matches = sum(o.caller_sas == o.callee_sas for o in outcomes)
    return matches, outcomes


def test_binomial_bound_is_sane() -> None:
    assert binomial_tail(10, 0.5, 0) == 1.0 or math.isclose(binomial_tail(10, 0.5, 0), 1.0)
    assert math.isclose(binomial_tail(10, 0.5, 10), 0.5**10)
    bound = max_matches(TRIALS, 2.0**-BITS)
    assert TRIALS * 2.0**-BITS < bound < 5 * TRIALS * 2.0**-BITS


def test_grinding_mitm_matches_no_more_than_two_to_minus_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 calls through a grinding MITM that knows both continuity fields: matches within
    the bound. With the commitment broken (the key in clear), the same attacker wins nearly
    every call by grinding nothing but the ML-KEM ciphertext of its ringing; on first contact
    (continuity unknown to it) it wins by grinding its reveal."""
    bound = max_matches(TRIALS, 2.0**-BITS)
    n = RINGING_CONTROL_TRIALS
    with monkeypatch.context() as broken:
        broken.setattr(keyagreement, "commitment_of", BROKEN_COMMITMENTS["discloses_the_key"])
        only_ct = (frozenset({ENCAPSULATION}),)
        wins, control = run(n, since_first_call=True, answer_ways=only_ct)
        first_wins, first = run(CONTROL_TRIALS, since_first_call=False)
    by_ciphertext = [o.grinding for o in control if o.grinding.won_at == "answer"]
    tried = sum(g.answers_tried for g in by_ciphertext) / max(1, len(by_ciphertext))
    print(
        f"control, commitment = the key in clear: {wins}/{n} SAS matches, {len(by_ciphertext)} "
        f"by grinding the ML-KEM ciphertext alone ({tried:.0f} encapsulations per call); "
        f"first contact: {first_wins}/{CONTROL_TRIALS}, by grinding the reveal"
    )
    assert wins >= n - 1, "the attacker cannot win even without a commitment"
    assert wins > max_matches(n, 2.0**-BITS)  # far beyond what the bound allows
    assert all(o.grinding.opened_commitment for o in control)
    assert len(by_ciphertext) >= n - 1
    assert all(g.answer_way == frozenset({ENCAPSULATION}) for g in by_ciphertext)
    assert first_wins >= CONTROL_TRIALS - 1
    assert not any(o.grinding.opened_commitment for o in first)  # continuity unknown to it
    assert all(o.grinding.won_at in ("reveal", None) for o in first)

    matches, outcomes = run(TRIALS, since_first_call=True)
    tried = sum(o.grinding.changed_tried for o in outcomes)
    accepted = sum(o.grinding.changed_accepted for o in outcomes)
    print(
        f"grinding MITM: {matches}/{TRIALS} SAS matches (expected {TRIALS / 2**BITS:.1f}, "
        f"bound {bound}); {tried} changed reveals tried, {accepted} accepted"
    )
    assert matches <= bound, f"{matches} matches in {TRIALS} calls: more than 2^-{BITS} allows"
    # It could never read the caller's key out of a commitment, so it had nothing to grind its
    # ringing (encapsulation, ephemeral key) against: every ringing was a blind guess ...
    assert not any(o.grinding.opened_commitment or o.grinding.answers_tried for o in outcomes)
    # ... it tried every way of changing its reveal, in every call it had not already won ...
    gave_up = len(WAYS) * PROBES  # each way refused PROBES times
    assert all(o.grinding.changed_tried in (0, gave_up) for o in outcomes)
    assert sum(o.grinding.changed_tried == 0 for o in outcomes) == matches
    # ... and the commitment refused every one: the callee got the committed reveal.
    assert accepted == 0


@pytest.mark.parametrize("broken", ["binds_nothing", "omits_the_key"])
def test_other_broken_commitments_let_the_same_attacker_win(
    monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """More controls: a commitment any reveal opens, and one that leaves the key out."""
    monkeypatch.setattr(keyagreement, "commitment_of", BROKEN_COMMITMENTS[broken])
    wins, _ = run(OTHER_CONTROL_TRIALS, since_first_call=False)
    print(f"control, commitment {broken}: {wins}/{OTHER_CONTROL_TRIALS} SAS matches")
    assert wins >= OTHER_CONTROL_TRIALS - 1
