"""Which calls keep their retained secret at connect (CallAgreement.earned_retained): every
call that continued the chain or started it, under the pinned key; never a MISMATCH, another
key than the pinned one, a CHANGED contact or a peer that is not a contact."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from voice.call.agreement import CallAgreement, Parties
from voice.crypto.contacts import Contact, TrustState
from voice.crypto.continuity import ContinuityResult
from voice.crypto.identity import fingerprint_of

PEER = bytes(range(32))
SECRET = b"\x5e" * 32


@dataclass
class Keys:  # the two fields of CallKeys that decide
    continuity: ContinuityResult
    next_retained: bytes = SECRET


def agreement(result: ContinuityResult) -> CallAgreement:
    a = CallAgreement(Parties(me=b"\x01" * 32, my_name="alice", peer=PEER, peer_name="bob",
                              call_id=b"\x02" * 16))  # fmt: skip
    a.keys = Keys(result)  # type: ignore[assignment]
    return a


BOB = Contact("bob", PEER, TrustState.UNVERIFIED, fingerprint_of(PEER))


@pytest.mark.parametrize("state", [TrustState.UNVERIFIED, TrustState.VERIFIED])
@pytest.mark.parametrize("result", [ContinuityResult.MATCH, ContinuityResult.NONE])
def test_a_call_that_continues_or_starts_the_chain_keeps_its_secret(
    state: TrustState, result: ContinuityResult
) -> None:
    assert agreement(result).earned_retained(replace(BOB, state=state)) == SECRET


@pytest.mark.parametrize(
    ("result", "contact"),
    [
        (ContinuityResult.MISMATCH, BOB),  # only a compared SAS (mark_verified) keeps it
        (ContinuityResult.MISMATCH, replace(BOB, state=TrustState.VERIFIED)),
        (ContinuityResult.MATCH, replace(BOB, public_key=b"\x09" * 32)),  # not the pinned key
        (ContinuityResult.NONE, replace(BOB, state=TrustState.CHANGED)),
        (ContinuityResult.MATCH, None),  # not a contact at all
    ],
)
def test_nothing_else_keeps_a_secret(result: ContinuityResult, contact: Contact | None) -> None:
    assert agreement(result).earned_retained(contact) is None


def test_no_keys_no_secret() -> None:
    a = agreement(ContinuityResult.MATCH)
    a.keys = None
    assert a.earned_retained(BOB) is None
