"""A server strips the post-quantum offer: "harvest now, decrypt later" by downgrade.

The envelopes are sealed under the users' identity keys, so a server can edit an offer only
if it can open and re-seal it. A server that substitutes identities of its own (first contact)
changes the identities bound in the commitment and the transcript, and with them the SASes,
whatever it does to the versions. The strongest position for a downgrade is a server that holds
both users' real identity keys (stolen): :class:`Stripper` opens and re-seals every envelope
under them and keeps its hands off the keys, relaying every ephemeral key, commitment and
reveal as sent. It edits only the version lists, so that the call runs on X25519 alone (version
1) and a recording of it falls to a future quantum computer, while the two users, it hopes,
read the same SAS.

Both users' phones run the call layer's own agreement (:class:`voice.call.agreement.
CallAgreement`), on real messages in real sealed envelopes. A phone offers and accepts version 2
only, so the strip just fails the call; to see the defences that guard a phone that also
accepts version 1, the phones here are configured for (1, 2), and the controls break each
defence on purpose:

* the caller recomputes the choice from both lists: an offer stripped alone is refused;
* the commitment binds the caller's list and ML-KEM key: the callee refuses the reveal;
* the transcript holds both lists as each side saw them: with the commitment's binding
  removed, the call completes on version 1 but the two SASes (and keys) differ;
* control: with the lists also left out of the transcript, the SASes are equal: the
  downgrade would go unnoticed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from voice.call import events as ev
from voice.call import messages as m
from voice.call.agreement import CallAgreement, Parties
from voice.crypto import keyagreement, keyschedule
from voice.crypto._bytes import lp, sha256
from voice.crypto.envelope import EnvelopeHeader, open_envelope, seal
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CallKeys

CALLS = 3
BOTH = (1, 2)


def without_pq(versions: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v for v in versions if v != 2) or (1,)


@dataclass
class Stripper:
    """Sans-I/O relay holding the users' identities (stolen): opens each envelope, removes
    version 2 (and the ML-KEM key) from offers, and from ringings' lists if ``ringing_too``,
    and re-seals it as its sender."""

    ringing_too: bool = True
    stolen: dict[str, Identity] = field(default_factory=dict)

    def relay(self, sender: str, to: str, body: bytes) -> bytes:
        opened = open_envelope(self.stolen[to], body)
        msg = m.decode(opened.payload)
        if isinstance(msg, m.Offer):
            msg = m.Offer(msg.commitment, msg.description, without_pq(msg.versions), b"")
        elif isinstance(msg, m.Ringing) and self.ringing_too:
            msg = dataclasses.replace(msg, versions=without_pq(msg.versions))
        peer = self.stolen[to].public_key
        return seal(self.stolen[sender], peer, opened.header, m.encode(msg))


@dataclass
class Result:
    caller: ev.Event
    callee: ev.Event
    caller_keys: CallKeys | None
    callee_keys: CallKeys | None


def call(server: Stripper, versions: Sequence[int]) -> Result:
    """alice calls bob through ``server``, both phones offering and accepting ``versions``."""
    alice, bob = Identity.generate(), Identity.generate()
    server.stolen.update(alice=alice, bob=bob)
    call_id, seq = os.urandom(16), iter(range(1, 100))

    def send(sender: Identity, name: str, to: str, msg: m.Message) -> m.Message:
        recipient = bob if to == "bob" else alice
        header = EnvelopeHeader(call_id, next(seq), 1_700_000_000_000)
        body = seal(sender, recipient.public_key, header, m.encode(msg))
        return m.decode(open_envelope(recipient, server.relay(name, to, body)).payload)

    a = CallAgreement(
        Parties(alice.public_key, "alice", bob.public_key, "bob", call_id), versions=versions
    )
    b = CallAgreement(
        Parties(bob.public_key, "bob", alice.public_key, "alice", call_id), versions=versions
    )
    dial = a.dial({"who": "alice"})
    offer = send(alice, "alice", "bob", dial.offer)
    assert isinstance(offer, m.Offer)
    ready = b.ring(offer, {"who": "bob"})
    if not isinstance(ready, ev.RingingReady):
        return Result(ev.UserDial(dial.offer, dial.reveal), ready, None, None)
    ringing = send(bob, "bob", "alice", ready.ringing)
    assert isinstance(ringing, m.Ringing)
    derived_a = a.derive(
        ev.DeriveKeys(
            ringing.eph_b,
            ringing.continuity_b,
            ringing.description,
            ringing.versions,
            ringing.version,
            ringing.mlkem_ct,
        )
    )
    if not isinstance(derived_a, ev.KeysReady):
        return Result(derived_a, ready, None, None)
    reveal = send(alice, "alice", "bob", dial.reveal)
    assert isinstance(reveal, m.Reveal)
    derived_b = b.derive(ev.DeriveKeys(reveal.eph_a, reveal.continuity_a, offer.description))
    return Result(derived_a, derived_b, a.keys, b.keys)


def commitment_without_negotiation(
    *,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
    versions: tuple[int, ...],
    kem_key: bytes,
    eph_a: bytes,
    continuity_a: bytes,
) -> bytes:
    """Broken on purpose: the commitment of version 1, blind to the list and the ML-KEM key."""
    ids = lp(call_id) + lp(caller) + lp(callee)
    return sha256(lp(b"voice commit v1") + ids + lp(eph_a) + lp(continuity_a))


def test_a_phone_that_requires_version_2_refuses_the_stripped_offer() -> None:
    for _ in range(CALLS):
        result = call(Stripper(), versions=(2,))
        assert result.callee == ev.BadMessage(ev.FailReason.UNSUPPORTED_VERSION)
        assert result.caller_keys is None and result.callee_keys is None


def test_an_offer_stripped_alone_is_refused_by_the_caller() -> None:
    """The ringing still lists version 2 beside the choice of 1: the caller sees the downgrade."""
    for _ in range(CALLS):
        result = call(Stripper(ringing_too=False), versions=BOTH)
        assert result.caller == ev.BadMessage(ev.FailReason.UNSUPPORTED_VERSION)
        assert result.caller_keys is None


def test_a_consistent_strip_is_refused_by_the_commitment() -> None:
    for _ in range(CALLS):
        result = call(Stripper(), versions=BOTH)
        assert isinstance(result.caller, ev.KeysReady)  # the caller cannot tell by itself ...
        assert result.callee == ev.CommitmentMismatch()  # ... the callee's check can
        assert result.callee_keys is None


def test_with_the_commitment_broken_the_transcript_still_gives_different_sases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lists in the transcript alone defeat the downgrade (different SAS, no working keys);
    control: with the lists also out of the transcript, the downgraded call looks fine."""
    monkeypatch.setattr(keyagreement, "commitment_of", commitment_without_negotiation)
    for _ in range(CALLS):
        result = call(Stripper(), versions=BOTH)
        ka, kb = result.caller_keys, result.callee_keys
        assert ka is not None and kb is not None  # the call went ahead on version 1 ...
        assert ka.sas.value != kb.sas.value  # ... and the users would see it
        assert ka.srtp_gcm_tx != kb.srtp_gcm_rx  # (and not one packet would decrypt)

    encode = keyschedule.encode_transcript

    def transcript_without_lists(**fields: object) -> bytes:
        version = fields["version"]
        assert isinstance(version, int)
        blind = {**fields, "caller_versions": (version,), "callee_versions": (version,)}
        return encode(**{**blind, "kem_key": b""})  # type: ignore[arg-type]

    monkeypatch.setattr(keyschedule, "encode_transcript", transcript_without_lists)
    for _ in range(CALLS):
        result = call(Stripper(), versions=BOTH)
        ka, kb = result.caller_keys, result.callee_keys
        assert ka is not None and kb is not None
        assert ka.sas == kb.sas and ka.srtp_gcm_tx == kb.srtp_gcm_rx  # downgrade unnoticed
