"""Attack 1.2, protocol level: a man in the middle grinds the SAS; the commitment stops it.

Two honest parties run the real call messages (voice.call.messages) inside real sealed envelopes
(voice.crypto.envelope) with the real committed key agreement, exactly the sequence the call
controller runs (offer, ringing, reveal). Between them sits :class:`tests.adversarial.mitm.Mitm`:
it substituted its own identity for both users (first contact), opens and re-seals every
envelope, and runs its own agreement with each side. It knows only what it relays. When the
caller's reveal arrives it knows the caller's SAS, and it grinds its own reveal to the callee
(:mod:`tests.support.grinding`): new ephemeral keys, new continuity fields, each checked with the
protocol's commitment function, trying to give the callee the same SAS.

With an 8-bit test SAS the two SASes must match no more often than 2^-8: we run many calls and
require the number of matches to stay under the binomial bound (false alarm below 1e-6). The
control, in the same test, breaks ``commitment_of`` on purpose (it returns the key in clear, the
audit's mutation of the production code): the same attacker then wins nearly every call.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest

from tests.adversarial.mitm import Mitm
from tests.support.grinding import BROKEN_COMMITMENTS, PROBES, WAYS, GrindStats
from voice.call import messages as m
from voice.crypto import keyagreement
from voice.crypto.envelope import EnvelopeHeader, open_envelope, seal
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement

BITS = 8
TRIALS = 1_000
GRIND = 4_096  # changed reveals per call: (255/256)^4096 < 1e-7 to miss where they are accepted
CONTROL_TRIALS = 100
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


class Parties:
    def __init__(self) -> None:
        self.alice = Identity.generate()
        self.bob = Identity.generate()
        self.seq = 0

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
            sas_bits=BITS,
        )
        offer = self.envelope(
            self.alice, bob_as_looked_up, call_id, m.Offer(caller.commitment, alice_desc)
        )
        at_bob = open_envelope(self.bob, self._relay(mitm, "alice", "bob", offer))
        got_offer = m.decode(at_bob.payload)
        assert isinstance(got_offer, m.Offer)
        callee = CalleeKeyAgreement(
            me=self.bob.public_key,
            peer=at_bob.sender_key,  # what bob pins for "alice" on first contact
            call_id=call_id,
            commitment=got_offer.commitment,
            my_name="bob",
            peer_name="alice",
            sas_bits=BITS,
        )
        answer = callee.answer()
        ringing = self.envelope(
            self.bob,
            at_bob.sender_key,
            call_id,
            m.Ringing(answer.eph_b, answer.continuity_b, bob_desc),
        )
        at_alice = open_envelope(self.alice, self._relay(mitm, "bob", "alice", ringing))
        got_ringing = m.decode(at_alice.payload)
        assert isinstance(got_ringing, m.Ringing)
        assert at_alice.sender_key == bob_as_looked_up  # the pinned key checks out
        reveal = caller.receive_answer(
            eph_b=got_ringing.eph_b,
            continuity_b=got_ringing.continuity_b,
            caller_description=m.canonical_description(alice_desc),
            callee_description=m.canonical_description(got_ringing.description),
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
        assert leg.grinding is not None
        return Outcome(
            caller_sas=caller.keys().sas.value,
            callee_sas=bob_keys.sas.value,
            attacker_caller_sas=leg.keys_with_caller.sas.value,
            attacker_callee_sas=leg.keys_with_callee.sas.value,
            grinding=leg.grinding,
        )

    @staticmethod
    def _relay(mitm: Mitm, sender: str, to: str, body: bytes) -> bytes:
        out = mitm.relay(sender, to, body)
        assert out is not None
        return out


def run(trials: int) -> tuple[int, list[Outcome]]:
    parties = Parties()
    mitm = Mitm(real_keys={}, sas_bits=BITS, grind=GRIND)
    outcomes = [parties.one_call(mitm) for _ in range(trials)]
    # The attacker really is in the middle of every call: each user's SAS is its leg's SAS ...
    assert all(o.caller_sas == o.attacker_caller_sas for o in outcomes)
    assert all(o.callee_sas == o.attacker_callee_sas for o in outcomes)
    # ... and it knows every input of the callee's SAS: it predicts each match exactly.
    assert all(o.grinding.predicted_match == (o.caller_sas == o.callee_sas) for o in outcomes)
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
    """1,000 calls through a grinding MITM: matches within the bound; with the commitment
    broken (the key in clear), the same attacker wins nearly every call."""
    bound = max_matches(TRIALS, 2.0**-BITS)
    with monkeypatch.context() as broken:
        broken.setattr(keyagreement, "commitment_of", BROKEN_COMMITMENTS["discloses_the_key"])
        wins, control = run(CONTROL_TRIALS)
    spent = sum(o.grinding.changed_tried for o in control) / CONTROL_TRIALS
    print(
        f"control, commitment = the key in clear: {wins}/{CONTROL_TRIALS} SAS matches, "
        f"{spent:.0f} changed reveals tried per call"
    )
    assert wins >= CONTROL_TRIALS - 1, "the attacker cannot win even without a commitment"
    assert wins > max_matches(CONTROL_TRIALS, 2.0**-BITS)  # far beyond what the bound allows
    assert all(o.grinding.changed_accepted > 0 for o in control if o.grinding.changed_tried)

    matches, outcomes = run(TRIALS)
    tried = sum(o.grinding.changed_tried for o in outcomes)
    accepted = sum(o.grinding.changed_accepted for o in outcomes)
    print(
        f"grinding MITM: {matches}/{TRIALS} SAS matches (expected {TRIALS / 2**BITS:.1f}, "
        f"bound {bound}); {tried} changed reveals tried, {accepted} accepted"
    )
    assert matches <= bound, f"{matches} matches in {TRIALS} calls: more than 2^-{BITS} allows"
    # It tried every way of changing its reveal, in every call it had not already won ...
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
    wins, _ = run(OTHER_CONTROL_TRIALS)
    print(f"control, commitment {broken}: {wins}/{OTHER_CONTROL_TRIALS} SAS matches")
    assert wins >= OTHER_CONTROL_TRIALS - 1
