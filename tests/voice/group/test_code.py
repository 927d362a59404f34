"""The group security code: equal for equal inputs, different when a server substitutes a key,
commit-before-reveal enforced, and a known-answer vector that pins the transcript."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import pytest

from voice.crypto.kdf import derive
from voice.crypto.sas import DEFAULT_SAS_BITS, Sas
from voice.crypto.wordlists import WORDS
from voice.errors import GroupCodeError
from voice.group.code import (
    CodeMember,
    CodeRound,
    GroupCodeInputs,
    commit,
    group_code,
    transcript,
)

EPOCH = 7
NAMES = {4: "alice", 17: "bob", 200: "carol"}


def member(index: int) -> CodeMember:
    b = index.to_bytes(1, "big")
    return CodeMember(NAMES[index], b"\x10" + b * 31, index, b"\x20" + b * 31, b"\x30" + b * 31)


def nonce_of(index: int) -> bytes:
    return b"\x40" + index.to_bytes(1, "big") * 31


def inputs(index: int, epoch: int = EPOCH) -> GroupCodeInputs:
    m = member(index)
    n = nonce_of(index)
    return GroupCodeInputs(
        m.username,
        m.identity_key,
        m.index,
        m.frame_key,
        m.sender_key_commitment,
        commit=commit(epoch, index, n),
        nonce=n,
    )


ALL = [inputs(i) for i in sorted(NAMES)]

# --- the known answer: recompute only when the protocol changes on purpose --------------------
KNOWN_TRANSCRIPT_SHA256 = "0365f3adf55c01f496da0d27aaacff788d99e3381fc972e85caedd07354205ae"
KNOWN_TRANSCRIPT_BYTES = 535
KNOWN_CODE_VALUE = 0xAAA7CE
KNOWN_WORDS = ("opera", "ocean", "salmon")


def test_known_answer() -> None:
    t = transcript(EPOCH, ALL)
    assert len(t) == KNOWN_TRANSCRIPT_BYTES
    assert hashlib.sha256(t).hexdigest() == KNOWN_TRANSCRIPT_SHA256
    code = group_code(EPOCH, ALL)
    assert code.value == KNOWN_CODE_VALUE
    assert code.words == KNOWN_WORDS
    assert (code.bits, len(code.words), len(code.emoji)) == (24, 3, 4)


def test_transcript_layout_by_hand() -> None:
    """The module docstring's transcript, rebuilt here field by field."""
    expected = b"voice group code v1" + EPOCH.to_bytes(8, "big")
    for i in sorted(NAMES):
        m, n = member(i), nonce_of(i)
        c = hashlib.sha256(b"voice group commit v1" + EPOCH.to_bytes(8, "big") + bytes([i]) + n)
        assert commit(EPOCH, i, n) == c.digest()
        name = m.username.encode()
        expected += len(name).to_bytes(4, "big") + name + m.identity_key + bytes([i])
        expected += m.frame_key + m.sender_key_commitment + c.digest() + n
    assert transcript(EPOCH, ALL) == expected
    okm = derive(expected, b"group code", b"", 8)
    assert group_code(EPOCH, ALL) == Sas(int.from_bytes(okm, "big") >> 40, DEFAULT_SAS_BITS)


def test_the_code_reads_as_the_1_to_1_sas_does() -> None:
    code = group_code(EPOCH, ALL)
    assert code.words[0] == WORDS[code.value >> 16]
    assert str(code) == " ".join(code.words)
    assert "value" not in repr(code)


def test_order_of_the_inputs_does_not_matter() -> None:
    assert group_code(EPOCH, ALL) == group_code(EPOCH, list(reversed(ALL)))
    assert group_code(EPOCH, ALL) == group_code(EPOCH, [ALL[1], ALL[2], ALL[0]])


def test_a_substituted_identity_key_changes_the_code() -> None:
    """A malicious server gave bob's peers another identity key for bob."""
    seen_by_victims = [
        replace(ALL[1], identity_key=b"\x66" * 32) if m.index == 17 else m for m in ALL
    ]
    assert group_code(EPOCH, seen_by_victims) != group_code(EPOCH, ALL)


@pytest.mark.parametrize(
    "field", ["username", "identity_key", "frame_key", "sender_key_commitment"]
)
def test_every_member_field_changes_the_code(field: str) -> None:
    value = "mallory" if field == "username" else b"\x66" * 32
    changed = [replace(ALL[0], **{field: value}), *ALL[1:]]
    assert group_code(EPOCH, changed) != group_code(EPOCH, ALL)


@pytest.mark.parametrize("index", sorted(NAMES))
def test_the_code_depends_on_every_nonce(index: int) -> None:
    flipped = bytes([nonce_of(index)[0] ^ 1]) + nonce_of(index)[1:]
    changed = [
        replace(m, nonce=flipped, commit=commit(EPOCH, index, flipped)) if m.index == index else m
        for m in ALL
    ]
    assert group_code(EPOCH, changed) != group_code(EPOCH, ALL)


def test_the_code_depends_on_the_epoch() -> None:
    later = [inputs(i, EPOCH + 1) for i in sorted(NAMES)]
    assert group_code(EPOCH + 1, later) != group_code(EPOCH, ALL)
    with pytest.raises(GroupCodeError):  # this epoch's commits do not fit another
        group_code(EPOCH + 1, ALL)


def test_a_nonce_not_matching_its_commit_is_refused() -> None:
    bad = [replace(ALL[0], nonce=b"\x00" * 32), *ALL[1:]]
    with pytest.raises(GroupCodeError):
        group_code(EPOCH, bad)


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        group_code(EPOCH, [])
    with pytest.raises(ValueError):
        group_code(EPOCH, [ALL[0], ALL[0]])
    with pytest.raises(ValueError):
        replace(ALL[0], identity_key=b"\x00" * 31)
    with pytest.raises(ValueError):
        replace(ALL[0], index=256)
    with pytest.raises(ValueError):
        commit(EPOCH, 1, b"short")
    assert nonce_of(4).hex() not in repr(ALL[0])


# --- the round --------------------------------------------------------------------------------


def rounds(epoch: int = EPOCH) -> dict[int, CodeRound]:
    return {i: CodeRound(epoch, NAMES, i, randbytes=lambda n, i=i: nonce_of(i)[:n]) for i in NAMES}


def run(all_rounds: dict[int, CodeRound], members: Sequence[CodeMember]) -> dict[int, Sas]:
    for r in all_rounds.values():
        for other in all_rounds.values():
            if other is not r:
                r.add_commit(other.own_index, other.own_commit)
    assert all(r.ready_to_reveal for r in all_rounds.values())
    for r in all_rounds.values():
        for other in all_rounds.values():
            if other is not r:
                r.add_reveal(other.own_index, other.own_reveal())
    assert all(r.complete for r in all_rounds.values())
    return {i: r.code(members) for i, r in all_rounds.items()}


def test_every_member_gets_the_same_code() -> None:
    codes = run(rounds(), [member(i) for i in NAMES])
    assert set(codes.values()) == {group_code(EPOCH, ALL)}


def test_a_member_shown_another_identity_key_gets_another_code() -> None:
    all_rounds = rounds()
    honest = [member(i) for i in NAMES]
    codes = run(all_rounds, honest)
    fooled = [replace(m, identity_key=b"\x66" * 32) if m.index == 17 else m for m in honest]
    assert all_rounds[4].code(fooled) != codes[17]


def test_a_reveal_not_matching_its_commit_fails_the_round() -> None:
    r = rounds()[4]
    r.add_commit(17, commit(EPOCH, 17, nonce_of(17)))
    r.add_commit(200, commit(EPOCH, 200, nonce_of(200)))
    with pytest.raises(GroupCodeError, match="does not match"):
        r.add_reveal(17, b"\x00" * 32)
    assert r.failure is not None
    assert not r.ready_to_reveal
    with pytest.raises(GroupCodeError):
        r.add_reveal(17, nonce_of(17))
    with pytest.raises(GroupCodeError):
        r.code([member(i) for i in NAMES])


def test_a_reveal_that_overtook_its_commit_is_checked_when_the_commit_comes() -> None:
    r = rounds()[4]
    r.add_reveal(17, nonce_of(17))  # before 17's commit: held back, nothing decided yet
    r.add_commit(200, commit(EPOCH, 200, nonce_of(200)))
    r.add_reveal(200, nonce_of(200))  # 200 committed: checked at once, before 17's commit
    assert r.failure is None and not r.complete
    r.add_commit(17, commit(EPOCH, 17, nonce_of(17)))
    assert r.complete and r.code([member(i) for i in NAMES]) == group_code(EPOCH, ALL)


def test_a_held_back_reveal_that_does_not_match_fails_when_its_commit_comes() -> None:
    r = rounds()[4]
    r.add_reveal(17, b"\x00" * 32)
    assert r.failure is None
    with pytest.raises(GroupCodeError, match="does not match"):
        r.add_commit(17, commit(EPOCH, 17, nonce_of(17)))
    assert r.failure is not None


def test_our_nonce_waits_for_every_commit() -> None:
    r = rounds()[4]
    assert r.own_commit == commit(EPOCH, 4, nonce_of(4))
    with pytest.raises(GroupCodeError):
        r.own_reveal()
    assert r.failure is None  # asking early is our own mistake, not the round's failure
    r.add_commit(17, commit(EPOCH, 17, nonce_of(17)))
    r.add_commit(200, commit(EPOCH, 200, nonce_of(200)))
    assert r.own_reveal() == nonce_of(4)


def test_a_changed_commit_fails_and_a_repeated_one_does_not() -> None:
    r = rounds()[4]
    c = commit(EPOCH, 17, nonce_of(17))
    r.add_commit(17, c)
    r.add_commit(17, c)
    with pytest.raises(GroupCodeError, match="changed"):
        r.add_commit(17, commit(EPOCH, 17, b"\x00" * 32))


def test_a_stranger_cannot_take_part() -> None:
    r = rounds()[4]
    with pytest.raises(GroupCodeError, match="not in the roster"):
        r.add_commit(99, b"\x00" * 32)
    assert r.failure is None
    with pytest.raises(ValueError):
        CodeRound(EPOCH, [1, 2], 3)


def test_the_code_needs_the_roster_and_every_reveal() -> None:
    all_rounds = rounds()
    run(all_rounds, [member(i) for i in NAMES])
    with pytest.raises(ValueError):
        all_rounds[4].code([member(4), member(17)])
    fresh = rounds()[4]
    with pytest.raises(GroupCodeError):
        fresh.code([member(i) for i in NAMES])


def test_a_round_makes_its_own_nonce() -> None:
    a, b = CodeRound(EPOCH, [1, 2], 1), CodeRound(EPOCH, [1, 2], 1)
    assert a.own_commit != b.own_commit
