"""The short authentication string the two callers read to each other.

``sas_bytes = derive(ikm=transcript_hash, label=b"sas", context=b"", length=8)`` (see kdf.py);
the SAS value is the top ``bits`` bits of ``sas_bytes`` read as a big-endian integer (24 by
default; at least 20 for real calls, fewer only for measuring attacks in tests).

Renderings of a ``bits``-bit value ``v`` (all deterministic, all shown to the user the same way on
both sides):

* words: ``ceil(bits/8)`` words; ``v << (8*n - bits)`` as n big-endian bytes, ``WORDS[byte]``;
* emoji: ``ceil(bits/6)`` emoji; ``v << (6*m - bits)`` as m 6-bit groups, most significant first,
  ``EMOJI[group]``;
* digits: ``v`` in decimal, zero-padded to ``ceil(bits * log10(2))`` digits.

Since the transcript hash covers everything both sides saw, equal SAS means equal transcripts
(up to the 2^-bits chance a hash commitment leaves a man-in-the-middle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from voice.crypto.kdf import LABEL_SAS, derive
from voice.crypto.wordlists import EMOJI, WORDS

__all__ = ["DEFAULT_SAS_BITS", "MIN_SAFE_SAS_BITS", "Sas", "sas_bytes"]

DEFAULT_SAS_BITS = 24
MIN_SAFE_SAS_BITS = 20
_SAS_BYTES = 8


def sas_bytes(transcript_hash: bytes) -> bytes:
    return derive(transcript_hash, LABEL_SAS, b"", _SAS_BYTES)


@dataclass(frozen=True)
class Sas:
    """A SAS value of ``bits`` bits. Its repr hides the value (never log a SAS)."""

    value: int = field(repr=False)
    bits: int = DEFAULT_SAS_BITS

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8 * _SAS_BYTES:
            raise ValueError("SAS bits must be between 1 and 64")
        if not 0 <= self.value < 1 << self.bits:
            raise ValueError("SAS value out of range")

    @classmethod
    def from_transcript_hash(cls, transcript_hash: bytes, bits: int = DEFAULT_SAS_BITS) -> Sas:
        if not 1 <= bits <= 8 * _SAS_BYTES:
            raise ValueError("SAS bits must be between 1 and 64")
        raw = int.from_bytes(sas_bytes(transcript_hash), "big")
        return cls(raw >> (8 * _SAS_BYTES - bits), bits)

    def _groups(self, width: int) -> list[int]:
        count = math.ceil(self.bits / width)
        v = self.value << (width * count - self.bits)
        mask = (1 << width) - 1
        return [(v >> (width * (count - 1 - i))) & mask for i in range(count)]

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(WORDS[g] for g in self._groups(8))

    @property
    def emoji(self) -> tuple[str, ...]:
        return tuple(EMOJI[g][0] for g in self._groups(6))

    @property
    def emoji_names(self) -> tuple[str, ...]:
        return tuple(EMOJI[g][1] for g in self._groups(6))

    @property
    def digits(self) -> str:
        return str(self.value).zfill(math.ceil(self.bits * math.log10(2)))

    def __str__(self) -> str:
        return " ".join(self.words)
