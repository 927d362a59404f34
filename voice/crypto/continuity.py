"""Key continuity: retained secrets from earlier calls with a contact (the ZRTP rs1/rs2 idea).

After each call that continued the chain (MATCH) or started it (NONE), and after one whose SAS
the users compared, each side keeps ``CallKeys.next_retained`` (never after a MISMATCH left
unverified: voice.call.agreement.CallAgreement.earned_retained). The next call mixes that
secret into its keys, so a man-in-the-middle who was not there for the earlier call cannot
produce matching keys, even if the users skip the SAS this time.

Each side sends a 64-byte continuity field in its key message: two 32-byte tokens, one for its
current and one for its previous retained secret (random bytes for a slot it has no secret for)::

    token(role, s) = HMAC-SHA256(s, lp("voice continuity v1") || lp(role) || lp(call_id)
                                    || lp(caller_identity) || lp(callee_identity))

where ``role`` is ``b"caller"`` or ``b"callee"`` (the role of the side that *sends* the token).
A side compares the peer's tokens with the tokens the peer would send for each of its own
secrets. Pairs are tried in a fixed order of (caller slot, callee slot): (0,0), (0,1), (1,0),
(1,1); both sides see the same matching pairs, so both pick the same secret. Keeping the
previous secret means one side having updated and the other not is still a MATCH.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from voice.crypto._bytes import constant_time_equal, hmac_sha256, lp

__all__ = [
    "CONTINUITY_BYTES",
    "ContinuityResult",
    "RetainedSecrets",
    "continuity_field",
    "continuity_token",
    "resolve_continuity",
]

TOKEN_BYTES = 32
CONTINUITY_BYTES = 2 * TOKEN_BYTES
SECRET_BYTES = 32
_LABEL = b"voice continuity v1"
CALLER = b"caller"
CALLEE = b"callee"
_PAIR_ORDER = ((0, 0), (0, 1), (1, 0), (1, 1))  # (caller slot, callee slot)


class ContinuityResult(enum.Enum):
    """What the continuity check found; MISMATCH must be shown to the user as a warning."""

    MATCH = "match"  # a retained secret is shared and was mixed into the keys
    NONE = "none"  # we have no retained secret for this contact yet
    MISMATCH = "mismatch"  # we have one but the peer proved none of them: warn


@dataclass(frozen=True)
class RetainedSecrets:
    """The current and the previous retained secret for one contact (ZRTP rs1, rs2)."""

    current: bytes | None = field(default=None, repr=False)
    previous: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for s in (self.current, self.previous):
            if s is not None and len(s) != SECRET_BYTES:
                raise ValueError("a retained secret is 32 bytes")

    def __bool__(self) -> bool:
        return self.current is not None or self.previous is not None

    def slots(self) -> tuple[bytes | None, bytes | None]:
        return (self.current, self.previous)

    def rotated(self, new_secret: bytes) -> RetainedSecrets:
        """Keep ``new_secret`` as current, the old current as previous."""
        if new_secret == self.current:
            return self
        return RetainedSecrets(current=new_secret, previous=self.current)


def continuity_token(
    secret: bytes, *, role: bytes, call_id: bytes, caller: bytes, callee: bytes
) -> bytes:
    """The token a side with ``role`` sends to prove it holds ``secret`` (see module doc)."""
    msg = lp(_LABEL) + lp(role) + lp(call_id) + lp(caller) + lp(callee)
    return hmac_sha256(secret, msg)


def continuity_field(
    retained: RetainedSecrets | None,
    *,
    role: bytes,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
    rng: Callable[[int], bytes],
) -> bytes:
    """The 64-byte field to send: token(current) || token(previous), random where absent."""
    out = b""
    for secret in (retained or RetainedSecrets()).slots():
        if secret is None:
            out += rng(TOKEN_BYTES)
        else:
            out += continuity_token(
                secret, role=role, call_id=call_id, caller=caller, callee=callee
            )
    return out


def resolve_continuity(
    retained: RetainedSecrets | None,
    peer_field: bytes,
    *,
    role: bytes,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
) -> tuple[ContinuityResult, bytes | None]:
    """Compare the peer's continuity field with our secrets; return the result and the secret
    to mix in (only for MATCH)."""
    own = (retained or RetainedSecrets()).slots()
    if len(peer_field) != CONTINUITY_BYTES:
        return (ContinuityResult.MISMATCH if any(own) else ContinuityResult.NONE), None
    peer_role = CALLEE if role == CALLER else CALLER
    peer_tokens = (peer_field[:TOKEN_BYTES], peer_field[TOKEN_BYTES:])
    for caller_slot, callee_slot in _PAIR_ORDER:
        own_slot, peer_slot = (
            (caller_slot, callee_slot) if role == CALLER else (callee_slot, caller_slot)
        )
        secret = own[own_slot]
        if secret is None:
            continue
        expected = continuity_token(
            secret, role=peer_role, call_id=call_id, caller=caller, callee=callee
        )
        if constant_time_equal(expected, peer_tokens[peer_slot]):
            return ContinuityResult.MATCH, secret
    if any(s is not None for s in own):
        return ContinuityResult.MISMATCH, None
    return ContinuityResult.NONE, None
