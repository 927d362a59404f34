"""SRTP/SRTCP keyed directly from the end-to-end key agreement: no DTLS.

The key agreement (``voice.crypto.keyagreement``) yields one AEAD_AES_256_GCM master key||salt
(32 + 12 = 44 bytes) per direction. We install them into two libsrtp sessions through
``pylibsrtp`` (the same binding aiortc uses): an outbound session for ``tx`` and an inbound one
for ``rx``, each a wildcard-SSRC policy (the SSRC is in the packet and covered by the tag).

Every packet that fails to verify (forged, tampered, wrong key, replayed, truncated) is dropped
and counted; nothing from the network is ever raised into the event loop.

Erasure is best effort in Python. libsrtp copies the key into its own C state, so the policy's
copy is overwritten with zeros right after each session is made; :meth:`SrtpContext.close` drops
the sessions, whose finalisers free that state (``srtp_dealloc``). The ``bytes`` objects the
caller passed in are immutable and cannot be wiped: callers should drop their references too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pylibsrtp
from pylibsrtp import Policy, Session

from voice.errors import MediaError, MediaKeyError

KEY_LENGTH = 32
SALT_LENGTH = 12
KEY_SALT_LENGTH = KEY_LENGTH + SALT_LENGTH  # 44
PROFILE = Policy.SRTP_PROFILE_AEAD_AES_256_GCM
TAG_LENGTH = 16  # GCM tag appended to every SRTP packet

_REPLAY_MESSAGES = ("replay check failed", "packet index is too old")


@dataclass
class SrtpCounters:
    """What the inbound side refused, by reason."""

    auth_failures: int = 0  # tag did not verify: wrong key, forgery, tampering
    replays: int = 0  # a packet index seen before (or too old for the window)
    malformed: int = 0  # too short, too long, or otherwise unusable


def check_key(name: str, value: object) -> bytes:
    """Return ``value`` if it is a 44-byte AES-256-GCM master key||salt, else raise."""
    if not isinstance(value, bytes):
        raise MediaKeyError(f"{name} key must be bytes")
    if len(value) != KEY_SALT_LENGTH:
        raise MediaKeyError(f"{name} key must be {KEY_SALT_LENGTH} bytes (key||salt)")
    return value


def _session(key: bytes, ssrc_type: int) -> Session:
    """One libsrtp session; the policy's C copy of the key is zeroed once libsrtp has its own."""
    policy = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=PROFILE)
    session = Session(policy)
    copy: Any = policy.key  # a writable cffi buffer over the policy's own copy
    copy[:] = bytes(len(key))
    return session


class SrtpContext:
    """Protect outgoing and verify incoming SRTP/SRTCP for one call."""

    def __init__(self, tx_key: bytes, rx_key: bytes) -> None:
        check_key("tx", tx_key)
        check_key("rx", rx_key)
        if tx_key == rx_key:
            # Distinct keys per direction; equal keys mean the derivation was misused.
            raise MediaKeyError("tx and rx keys must differ (one key per direction)")
        self.counters = SrtpCounters()
        self._tx: Session | None = _session(tx_key, Policy.SSRC_ANY_OUTBOUND)
        self._rx: Session | None = _session(rx_key, Policy.SSRC_ANY_INBOUND)

    @property
    def closed(self) -> bool:
        return self._tx is None

    def protect(self, rtp: bytes) -> bytes:
        """Encrypt and authenticate one RTP packet."""
        return bytes(self._sender().protect(rtp))

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """Encrypt and authenticate one (compound) RTCP packet."""
        return bytes(self._sender().protect_rtcp(rtcp))

    def unprotect(self, srtp: bytes) -> bytes | None:
        """Verify and decrypt one SRTP packet; ``None`` (and a count) if it does not verify."""
        if self._rx is None:
            return None
        return self._unprotect(self._rx.unprotect, srtp)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes | None:
        """Verify and decrypt one SRTCP packet; ``None`` (and a count) if it does not verify."""
        if self._rx is None:
            return None
        return self._unprotect(self._rx.unprotect_rtcp, srtcp)

    def close(self) -> None:
        """Drop the libsrtp sessions (their finalisers free the C key state); idempotent."""
        self._tx = None
        self._rx = None

    def _sender(self) -> Session:
        if self._tx is None:
            raise MediaError("SRTP context is closed")
        return self._tx

    def _unprotect(self, func: object, data: bytes) -> bytes | None:
        assert callable(func)
        try:
            return bytes(func(data))
        except pylibsrtp.Error as exc:
            if any(text in str(exc) for text in _REPLAY_MESSAGES):
                self.counters.replays += 1
            elif "authentication failure" in str(exc):
                self.counters.auth_failures += 1
            else:
                self.counters.malformed += 1
        except (ValueError, TypeError):
            self.counters.malformed += 1
        return None
