"""Frame signatures: a genuine frame verifies; a member sending under another member's KID,
a flipped bit, an unknown member or junk is refused with ForgedFrame, and nothing else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from voice.errors import ForgedFrame, SFrameError
from voice.group.frameauth import FRAME_LABEL, SIGNATURE_BYTES, FrameSigner, FrameVerifier
from voice.group.keys import SUITE, OwnSender, PeerKeys, SenderKey
from voice.group.sframe import Header, SFrameSender

KEY_I = SenderKey(3, 0, 0, b"\x33" * 32)
KEY_J = SenderKey(200, 0, 0, b"\xcc" * 32)
SIGNER_I = FrameSigner(SigningKey(b"\x01" * 32))
SIGNER_J = FrameSigner(SigningKey(b"\x02" * 32))
VERIFIER = FrameVerifier({3: SIGNER_I.public_key, 200: SIGNER_J.public_key})


def genuine(frame: bytes = b"opus frame of member i") -> tuple[bytes, bytes]:
    """(sframe ciphertext, signed payload) of member i."""
    sealed = OwnSender(KEY_I).protect(frame)
    return sealed, SIGNER_I.sign(sealed)


def test_a_genuine_frame_verifies_and_opens() -> None:
    sealed, payload = genuine()
    assert len(payload) == len(sealed) + SIGNATURE_BYTES
    assert VERIFIER.verify(payload) == sealed
    receiver = PeerKeys()
    receiver.install(KEY_I, 0.0)
    assert receiver.unprotect(VERIFIER.verify(payload), 0.0) == (3, b"opus frame of member i")


def test_the_signature_is_ed25519_over_the_label_and_the_sframe_ciphertext() -> None:
    sealed, payload = genuine()
    SigningKey(b"\x01" * 32).verify_key.verify(FRAME_LABEL + sealed, payload[len(sealed) :])


def test_member_j_cannot_send_under_member_is_kid() -> None:
    # j holds i's sender key (every member does) and seals under i's KID, but signs as j.
    forged = SFrameSender(KEY_I.kid, KEY_I.base_key, SUITE).protect(b"words i never said")
    with pytest.raises(ForgedFrame):
        VERIFIER.verify(SIGNER_J.sign(forged))
    # j's own frames, under j's KID, verify.
    own = OwnSender(KEY_J).protect(b"j speaking")
    assert VERIFIER.verify(SIGNER_J.sign(own)) == own


def test_a_signature_moved_onto_another_frame_is_refused() -> None:
    _, first = genuine(b"one")
    second, _ = genuine(b"two")
    with pytest.raises(ForgedFrame):
        VERIFIER.verify(second + first[-SIGNATURE_BYTES:])


def test_every_bit_flip_is_refused() -> None:
    _, payload = genuine(b"short")
    for position in range(len(payload)):
        for bit in (0x01, 0x80):
            tampered = bytearray(payload)
            tampered[position] ^= bit
            with pytest.raises(ForgedFrame):
                VERIFIER.verify(bytes(tampered))


def test_an_unknown_member_is_refused() -> None:
    stranger = SenderKey(77, 0, 0, b"\x77" * 32)
    sealed = OwnSender(stranger).protect(b"hi")
    with pytest.raises(ForgedFrame, match="member 77"):
        VERIFIER.verify(FrameSigner(SigningKey(b"\x77" * 32)).sign(sealed))


def test_a_kid_beyond_32_bits_is_refused() -> None:
    sealed = SFrameSender(2**40, b"\x33" * 32, SUITE).protect(b"hi")
    with pytest.raises(ForgedFrame):
        VERIFIER.verify(SIGNER_I.sign(sealed))


@pytest.mark.parametrize("length", [0, 1, SIGNATURE_BYTES - 1, SIGNATURE_BYTES])
def test_too_short_is_refused(length: int) -> None:
    _, payload = genuine()
    with pytest.raises(ForgedFrame):
        VERIFIER.verify(payload[-length:] if length else b"")


def test_a_truncated_header_is_refused() -> None:
    header = Header(2**20, 5).encode()  # 1 + 3 + 1 bytes
    with pytest.raises(ForgedFrame):
        VERIFIER.verify(header[:2] + bytes(SIGNATURE_BYTES))


def test_the_verifier_checks_its_keys() -> None:
    with pytest.raises(ValueError):
        FrameVerifier({256: SIGNER_I.public_key})
    with pytest.raises(ValueError):
        FrameVerifier({1: b"\x00" * 31})
    with pytest.raises(TypeError):
        FrameSigner(b"\x01" * 32)  # type: ignore[arg-type]
    assert VERIFIER.indices == {3, 200}
    assert repr(SIGNER_I).startswith("<FrameSigner public ")


def test_a_forged_frame_is_dropped_as_any_bad_frame() -> None:
    assert issubclass(ForgedFrame, SFrameError)  # the receive path drops SFrameError


def test_generated_signers_differ() -> None:
    assert FrameSigner.generate().public_key != FrameSigner.generate().public_key


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_raise_only_forged_frame(data: bytes) -> None:
    with contextlib.suppress(ForgedFrame):  # anything else fails the test
        VERIFIER.verify(data)


@settings(max_examples=300)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=120))
def test_fuzz_well_formed_headers_raise_only_forged_frame(kid: int, ctr: int, rest: bytes) -> None:
    with contextlib.suppress(ForgedFrame):
        VERIFIER.verify(Header(kid, ctr).encode() + rest)
