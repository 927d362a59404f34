"""Per-frame signatures: no member can send under another member's KID.

Every member of an epoch holds every sender's SFrame key, so SFrame alone cannot tell member
``i``'s frames from frames another member sealed with ``i``'s key. Each sender therefore signs
its frames with its own ephemeral Ed25519 *frame signing key* ``F_i`` (its public half is in the
roster). The wire format, parsed only here (docs/group-calls.md, "Frame authenticity"):

    payload   = sframe_ciphertext || signature                  (signature: 64 bytes)
    signature = Ed25519-Sign(F_i, "voice group frame v1" || sframe_ciphertext)

A receiver reads the KID from the SFrame header, takes the member index from it
(voice.group.keys), verifies the signature with that member's ``F_i`` and only then opens the
SFrame. Pure: keys arrive as bytes or pynacl keys; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from voice.errors import ForgedFrame, SFrameError
from voice.group.keys import MAX_INDEX, parse_group_kid
from voice.group.sframe import Header

__all__ = ["FRAME_LABEL", "PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "FrameSigner", "FrameVerifier"]

FRAME_LABEL = b"voice group frame v1"
SIGNATURE_BYTES = 64  # the constant overhead of every frame
PUBLIC_KEY_BYTES = 32


class FrameSigner:
    """Signs the local member's SFrame ciphertexts with its frame signing key ``F_i``."""

    def __init__(self, signing_key: SigningKey) -> None:
        if not isinstance(signing_key, SigningKey):
            raise TypeError("a frame signing key is a nacl.signing.SigningKey")
        self._key = signing_key

    def __repr__(self) -> str:
        return f"<FrameSigner public {self.public_key.hex()[:16]}...>"

    @classmethod
    def generate(cls) -> FrameSigner:
        """A signer with a new random key (one per member per group call)."""
        return cls(SigningKey.generate())

    @property
    def public_key(self) -> bytes:
        """``F_i``'s public key, 32 bytes, for the roster."""
        return bytes(self._key.verify_key)

    def sign(self, sframe_bytes: bytes) -> bytes:
        """``sframe_bytes`` followed by their signature (:data:`SIGNATURE_BYTES` more)."""
        data = bytes(sframe_bytes)
        return data + self._key.sign(FRAME_LABEL + data).signature


class FrameVerifier:
    """Checks the signatures of one epoch's frames against the roster's frame signing keys.

    ``keys_by_index`` maps a member index to its 32-byte Ed25519 public key; make a new
    verifier when the roster changes.
    """

    def __init__(self, keys_by_index: Mapping[int, bytes]) -> None:
        self._keys: dict[int, VerifyKey] = {}
        for index, public in keys_by_index.items():
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_INDEX:
                raise ValueError(f"a member index is an integer from 0 to {MAX_INDEX}")
            if not isinstance(public, bytes) or len(public) != PUBLIC_KEY_BYTES:
                raise ValueError(f"a frame signing public key is {PUBLIC_KEY_BYTES} bytes")
            self._keys[index] = VerifyKey(public)

    def __repr__(self) -> str:
        return f"<FrameVerifier members {sorted(self._keys)}>"

    @property
    def indices(self) -> frozenset[int]:
        return frozenset(self._keys)

    def verify(self, payload: bytes) -> bytes:
        """The SFrame ciphertext of a signed ``payload``, once its signature checks out.

        Raises ForgedFrame if the payload is too short to hold a header and a signature, its
        KID names no member of this verifier, or the signature does not verify.
        """
        data = bytes(payload)
        if len(data) <= SIGNATURE_BYTES:
            raise ForgedFrame("a group frame too short for a header and a signature")
        sframe, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
        try:
            header, _ = Header.decode(sframe)
        except SFrameError:
            raise ForgedFrame("a group frame without a valid SFrame header") from None
        try:
            index, _, _ = parse_group_kid(header.kid)
        except ValueError:
            raise ForgedFrame(f"KID {header.kid} is not a group KID") from None
        key = self._keys.get(index)
        if key is None:
            raise ForgedFrame(f"a frame under the KID of member {index}, not in the roster")
        try:
            key.verify(FRAME_LABEL + sframe, signature)
        except BadSignatureError:
            raise ForgedFrame(f"a frame of member {index} with a bad signature") from None
        return sframe
