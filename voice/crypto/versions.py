"""Key-agreement versions: which exist, which a phone offers, and the one rule that picks one.

    1  X25519 only, the classical exchange (measurement and tests; no phone offers it)
    2  X25519 + ML-KEM-768, hybrid: the default, and all a phone offers and accepts

The caller lists the versions it supports in its offer; the callee picks the highest version
in both lists (:func:`negotiate`) and names it in its ringing, beside its own list. Both lists
and the choice go into the commitment (the caller's list) and the transcript (all three) as
each side sent or received them, so a server that edits a list makes the two transcripts, and
with them the keys and the SAS, differ. The caller also recomputes the choice from the two
lists and refuses any other (a downgrade it sees without the users' help).

An offer without a list comes from a phone older than negotiation (the exchange before
version 2, which bound no list): no version in common, refused with ``unsupported_version``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from voice.errors import UnsupportedVersion

__all__ = [
    "CLASSICAL",
    "DEFAULT_VERSIONS",
    "HYBRID",
    "IMPLEMENTED",
    "MAX_VERSIONS",
    "check_list",
    "encode_list",
    "negotiate",
    "supported_list",
]

CLASSICAL = 1
HYBRID = 2
IMPLEMENTED: tuple[int, ...] = (CLASSICAL, HYBRID)
DEFAULT_VERSIONS: tuple[int, ...] = (HYBRID,)
MAX_VERSIONS = 8  # entries in a list on the wire
MAX_VERSION = 255  # one byte in the transcript


def check_list(versions: object) -> tuple[int, ...]:
    """A version list as the wire carries it: 1..8 integers 1..255, strictly increasing (one
    spelling per set). Raises ValueError; unknown versions are allowed (a newer peer's)."""
    if not isinstance(versions, tuple | list) or not 1 <= len(versions) <= MAX_VERSIONS:
        raise ValueError(f"a version list holds 1..{MAX_VERSIONS} versions")
    for v in versions:
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_VERSION:
            raise ValueError(f"a version is an integer 1..{MAX_VERSION}")
    if any(a >= b for a, b in itertools.pairwise(versions)):
        raise ValueError("a version list is strictly increasing")
    return tuple(versions)


def supported_list(versions: Sequence[int]) -> tuple[int, ...]:
    """Check what a phone is configured to support: a valid list of implemented versions."""
    checked = check_list(tuple(versions))
    unknown = [v for v in checked if v not in IMPLEMENTED]
    if unknown:
        raise ValueError(f"key-agreement versions not implemented here: {unknown}")
    return checked


def negotiate(offered: Sequence[int], supported: Sequence[int]) -> int:
    """The highest version in both lists; UnsupportedVersion if they share none."""
    common = set(offered) & set(supported)
    if not common:
        theirs = ", ".join(map(str, offered)) or "none (a phone from before version 2)"
        ours = ", ".join(map(str, supported))
        raise UnsupportedVersion(
            f"no key-agreement version in common: the peer offers {theirs}, we support {ours}"
        )
    return max(common)


def encode_list(versions: Sequence[int]) -> bytes:
    """A list as the commitment and the transcript hold it: one byte per version."""
    return bytes(check_list(tuple(versions)))
