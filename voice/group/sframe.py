"""SFrame (RFC 9605): end-to-end encryption of media frames that an SFU forwards unread.

Pure and sans-I/O: bytes in, bytes out; base keys arrive as bytes from whoever distributes
them (sender keys in sealed envelopes, later). One wire format, parsed only here: an SFrame
ciphertext is ``header || AEAD ciphertext`` (tag included), and the header (section 4.3) is

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+------------+------------+
    |X|  K  |Y|  C  |   KID...   |   CTR...   |
    +-+-+-+-+-+-+-+-+------------+------------+

    X = 0: K is the KID itself (0-7).    X = 1: the KID follows, in K + 1 bytes (1-8).
    Y = 0: C is the CTR itself (0-7).    Y = 1: the CTR follows, in C + 1 bytes (1-8).

KID and CTR are unsigned 64-bit integers, big-endian in the fewest bytes, KID first; a value
below 8 always rides in the config byte. A header in any other form (truncated, not minimal)
is refused with SFrameError, so that a (KID, CTR) pair has exactly one header.

Keys (section 4.4.2), with the suite's hash, the KID as 8 bytes and the suite as 2 (big-endian):

    sframe_secret = HKDF-Extract("", base_key)
    sframe_key    = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key "  + KID + suite, Nk)
    sframe_salt   = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " + KID + suite, Nn)

A frame (sections 4.4.3 and 4.4.4): nonce = sframe_salt XOR CTR (CTR as Nn bytes, big-endian),
AAD = header || metadata, ciphertext = AEAD.Encrypt(sframe_key, nonce, AAD, frame).

A sender never reuses a CTR (the RFC's MUST: a repeated nonce breaks GCM) and stops after
2**64 frames. A receiver keeps, per KID, the highest CTR it accepted and a bitmap of the
``replay_window`` (default 128) CTRs below it, as SRTP does (RFC 3711 section 3.3.2): a CTR
seen before, or older than the window, is refused. Only a frame that authenticated moves the
window, so forgeries cannot. At 50 frames a second, 128 CTRs is 2.5 seconds of reordering.

Never logged, never in a repr: base keys, keys, salts. Python cannot wipe ``bytes``: a removed
key lives on until its memory is reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice.errors import CounterExhausted, SFrameError, UnknownKeyId
from voice.group.suites import Aead, CipherSuite, hkdf_expand, hkdf_extract, new_aead

__all__ = [
    "MAX_VALUE",
    "REPLAY_WINDOW",
    "CipherSuite",
    "Header",
    "SFrameReceiver",
    "SFrameSender",
    "compose_kid",
    "derive_key_salt",
    "frame_nonce",
    "labels",
    "ratchet",
    "split_kid",
]

MAX_VALUE = 2**64 - 1  # the largest KID or CTR
REPLAY_WINDOW = 128
MIN_BASE_KEY_BYTES = 16  # RFC 9605 sets no length; anything shorter is a mistake
RATCHET_LABEL = b"SFrame 1.0 Ratchet"
_KEY_LABEL = b"SFrame 1.0 Secret key "
_SALT_LABEL = b"SFrame 1.0 Secret salt "

SuiteLike = CipherSuite | int


def _suite(suite: SuiteLike) -> CipherSuite:
    try:
        return CipherSuite(suite)
    except ValueError:
        raise ValueError(f"unknown SFrame cipher suite {suite!r}") from None


def _check_u64(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_VALUE:
        raise ValueError(f"the {name} is an integer from 0 to 2**64 - 1")


def _check_base_key(base_key: bytes) -> None:
    if not isinstance(base_key, bytes) or len(base_key) < MIN_BASE_KEY_BYTES:
        raise ValueError(f"a base key is at least {MIN_BASE_KEY_BYTES} bytes")


def _min_len(value: int) -> int:
    return max(1, (value.bit_length() + 7) // 8)


@dataclass(frozen=True)
class Header:
    """The SFrame header of one frame: which key (KID) and which counter (CTR) sealed it."""

    kid: int
    ctr: int

    def __post_init__(self) -> None:
        _check_u64("KID", self.kid)
        _check_u64("CTR", self.ctr)

    def encode(self) -> bytes:
        kid_bits, kid_bytes = _encode_field(self.kid)
        ctr_bits, ctr_bytes = _encode_field(self.ctr)
        return bytes([kid_bits << 4 | ctr_bits]) + kid_bytes + ctr_bytes

    @classmethod
    def decode(cls, data: bytes) -> tuple[Header, int]:
        """The header at the start of ``data`` and its length in bytes.

        Raises SFrameError unless ``data`` starts with a complete header in its minimal form.
        """
        if not data:
            raise SFrameError("an SFrame ciphertext cannot be empty")
        kid, offset = _decode_field(data, data[0] >> 4, 1, "KID")
        ctr, offset = _decode_field(data, data[0] & 0x0F, offset, "CTR")
        return cls(kid, ctr), offset


def _encode_field(value: int) -> tuple[int, bytes]:
    """The 4 config bits (flag, then value or length - 1) and the bytes that follow them."""
    if value < 8:
        return value, b""
    n = _min_len(value)
    return 0x08 | (n - 1), value.to_bytes(n, "big")


def _decode_field(data: bytes, bits: int, offset: int, name: str) -> tuple[int, int]:
    """The value that ``bits`` (4 config bits) describe, and the offset after its bytes."""
    if not bits & 0x08:
        return bits, offset
    n = (bits & 0x07) + 1
    raw = data[offset : offset + n]
    if len(raw) < n:
        raise SFrameError(f"truncated SFrame header: its {name} needs {n} bytes")
    value = int.from_bytes(raw, "big")
    if value < 8 or _min_len(value) != n:
        raise SFrameError(f"the {name} of an SFrame header is not in its shortest form")
    return value, offset + n


def labels(kid: int, suite: SuiteLike) -> tuple[bytes, bytes]:
    """The HKDF-Expand infos of ``sframe_key`` and ``sframe_salt`` for ``kid`` (section 4.4.2)."""
    _check_u64("KID", kid)
    tail = kid.to_bytes(8, "big") + _suite(suite).to_bytes(2, "big")
    return _KEY_LABEL + tail, _SALT_LABEL + tail


def derive_key_salt(kid: int, base_key: bytes, suite: SuiteLike) -> tuple[bytes, bytes]:
    """(sframe_key, sframe_salt) of ``base_key`` used under ``kid`` (section 4.4.2)."""
    cs = _suite(suite)
    _check_base_key(base_key)
    key_label, salt_label = labels(kid, cs)
    secret = hkdf_extract(cs, base_key)
    return hkdf_expand(cs, secret, key_label, cs.nk), hkdf_expand(cs, secret, salt_label, cs.nn)


def frame_nonce(salt: bytes, ctr: int) -> bytes:
    """sframe_salt XOR CTR, the CTR left-padded to the salt's length (section 4.4.3)."""
    _check_u64("CTR", ctr)
    return (int.from_bytes(salt, "big") ^ ctr).to_bytes(len(salt), "big")


def ratchet(base_key: bytes, suite: SuiteLike) -> bytes:
    """The next base key of a sender-key ratchet (section 5.1), one way for forward secrecy:

    base_key[i+1] = HKDF-Expand(HKDF-Extract("", base_key[i]), "SFrame 1.0 Ratchet", Nh)
    """
    cs = _suite(suite)
    _check_base_key(base_key)
    return hkdf_expand(cs, hkdf_extract(cs, base_key), RATCHET_LABEL, cs.nh)


def compose_kid(generation: int, step: int, r_bits: int) -> int:
    """KID = (key generation << R) + (ratchet step mod 2**R), as in section 5.1.

    Only the low R bits of the step travel; a receiver ratchets when they change.
    """
    _check_r(r_bits)
    if step < 0 or not 0 <= generation < 1 << (64 - r_bits):
        raise ValueError(f"the key generation needs {64 - r_bits} bits at most")
    return (generation << r_bits) + (step % (1 << r_bits))


def split_kid(kid: int, r_bits: int) -> tuple[int, int]:
    """(key generation, ratchet step mod 2**R) of a KID made by :func:`compose_kid`."""
    _check_r(r_bits)
    _check_u64("KID", kid)
    return kid >> r_bits, kid & ((1 << r_bits) - 1)


def _check_r(r_bits: int) -> None:
    if not 0 <= r_bits <= 64:
        raise ValueError("R is a number of bits, from 0 to 64")


class _FrameKey:
    """The key and salt of one KID, with its AEAD made once rather than per frame."""

    __slots__ = ("_aead", "_salt", "kid")

    def __init__(self, kid: int, base_key: bytes, suite: CipherSuite) -> None:
        key, salt = derive_key_salt(kid, base_key, suite)
        self.kid = kid
        self._aead: Aead = new_aead(suite, key)
        self._salt = salt

    def __repr__(self) -> str:
        return f"<SFrame key of KID {self.kid}>"

    def seal(self, ctr: int, metadata: bytes, frame: bytes) -> bytes:
        header = Header(self.kid, ctr).encode()
        nonce = frame_nonce(self._salt, ctr)
        return header + self._aead.encrypt(nonce, header + metadata, frame)

    def unseal(self, header: bytes, ctr: int, metadata: bytes, body: bytes) -> bytes:
        return self._aead.decrypt(frame_nonce(self._salt, ctr), header + metadata, body)


class _ReplayWindow:
    """The CTRs accepted under one KID: the highest, and a bitmap of the ``size`` below it."""

    __slots__ = ("_highest", "_seen", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._highest = -1
        self._seen = 0  # bit i set: CTR (highest - i) was accepted

    def check(self, ctr: int) -> None:
        if ctr > self._highest:
            return
        offset = self._highest - ctr
        if offset >= self._size or self._seen >> offset & 1:
            raise SFrameError("a replayed SFrame counter, or one older than the replay window")

    def record(self, ctr: int) -> None:
        if ctr <= self._highest:
            self._seen |= 1 << (self._highest - ctr)
            return
        shift = ctr - self._highest  # a jump past the window forgets it all, in O(window)
        kept = self._seen << shift if shift < self._size else 0
        self._seen = (kept | 1) & ((1 << self._size) - 1)
        self._highest = ctr


class SFrameSender:
    """Seals the frames of one sender under one KID and base key, CTR 0, 1, 2, ...

    The base key must be this sender's alone (RFC 9605 section 4.4.1): two senders sharing a
    (base key, KID) would reuse nonces. ``ctr`` resumes a stored context: store
    :attr:`next_ctr` before sending again (section 9.1). After CTR 2**64 - 1,
    :meth:`protect` raises CounterExhausted: switch to a new key under a new KID.
    """

    def __init__(self, kid: int, base_key: bytes, suite: SuiteLike, *, ctr: int = 0) -> None:
        _check_u64("CTR", ctr)
        self._suite = _suite(suite)
        self._key = _FrameKey(kid, base_key, self._suite)
        self._next = ctr

    def __repr__(self) -> str:
        return f"<SFrameSender KID {self.kid} {self._suite.name} next CTR {self._next}>"

    @property
    def kid(self) -> int:
        return self._key.kid

    @property
    def suite(self) -> CipherSuite:
        return self._suite

    @property
    def next_ctr(self) -> int:
        """The CTR of the next frame; 2**64 once every CTR is spent."""
        return self._next

    def protect(self, frame: bytes, metadata: bytes = b"") -> bytes:
        """The SFrame ciphertext of ``frame``; ``metadata`` is authenticated, not sent."""
        ctr = self._next
        if ctr > MAX_VALUE:
            raise CounterExhausted(f"KID {self.kid} has sealed 2**64 frames: use a new key")
        self._next = ctr + 1  # spent before use: no failure below can lead to its reuse
        return self._key.seal(ctr, metadata, frame)


class SFrameReceiver:
    """Opens the SFrame ciphertexts of every sender whose key it holds, one key per KID.

    A KID names one base key while it is installed: adding a KID that is installed raises
    ValueError (its replay window would be lost). Removing a KID forgets its window, so never
    re-add a removed KID with the key it had (its old frames would open again): a KID may come
    back only with a new base key, as the ratchet's R bits wrap (section 5.1).
    """

    def __init__(self, suite: SuiteLike, *, replay_window: int = REPLAY_WINDOW) -> None:
        if replay_window < 1:
            raise ValueError("the replay window holds at least one counter")
        self._suite = _suite(suite)
        self._window = replay_window
        self._keys: dict[int, tuple[_FrameKey, _ReplayWindow]] = {}

    def __repr__(self) -> str:
        return f"<SFrameReceiver {self._suite.name} KIDs {sorted(self._keys)}>"

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    @property
    def suite(self) -> CipherSuite:
        return self._suite

    @property
    def kids(self) -> frozenset[int]:
        return frozenset(self._keys)

    def add_key(self, kid: int, base_key: bytes) -> None:
        """Accept frames sealed under ``base_key`` with ``kid`` (a fresh replay window)."""
        if kid in self._keys:
            raise ValueError(f"KID {kid} already has a key: remove it first")
        self._keys[kid] = (_FrameKey(kid, base_key, self._suite), _ReplayWindow(self._window))

    def remove_key(self, kid: int) -> None:
        """Forget ``kid``'s key and window; later frames under it raise UnknownKeyId."""
        self._keys.pop(kid, None)

    def unprotect(self, data: bytes, metadata: bytes = b"") -> tuple[int, bytes]:
        """(KID, frame) of an SFrame ciphertext, or SFrameError: malformed, unknown KID
        (UnknownKeyId), failed authentication, or a replayed or too old CTR."""
        data = bytes(memoryview(data))  # bytes, bytearray or memoryview; one private copy
        header, length = Header.decode(data)
        entry = self._keys.get(header.kid)
        if entry is None:
            raise UnknownKeyId(header.kid)
        key, window = entry
        window.check(header.ctr)
        frame = key.unseal(data[:length], header.ctr, metadata, data[length:])
        window.record(header.ctr)
        return header.kid, frame
