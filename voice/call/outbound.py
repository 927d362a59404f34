"""Sealing one call's outgoing messages: call id, a per-direction seq from 0, a timestamp.

Every message of a call goes to the peer's identity key inside an envelope whose header the
receiver's replay guard checks (:mod:`voice.crypto.envelope`, :mod:`voice.crypto.replay`). The
clock is a parameter (wall-clock seconds, the receiver's freshness scale).
"""

from __future__ import annotations

from collections.abc import Callable

from voice.call import messages as m
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity

__all__ = ["CallSealer"]


class CallSealer:
    """Seals the messages of one call to one peer, numbering them from 0."""

    def __init__(
        self, identity: Identity, peer_key: bytes, call_id: bytes, clock: Callable[[], float]
    ) -> None:
        self._identity = identity
        self._peer_key = bytes(peer_key)
        self._call_id = bytes(call_id)
        self._clock = clock
        self._seq = 0

    def seal(self, message: m.Message) -> bytes:
        return self.seal_payload(m.encode(message))

    def seal_payload(self, payload: bytes) -> bytes:
        """Seal an encoded message (the next seq, the clock's time now)."""
        header = EnvelopeHeader(self._call_id, self._seq, int(self._clock() * 1000))
        self._seq += 1
        return seal(self._identity, self._peer_key, header, payload)
