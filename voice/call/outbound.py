"""Sealing one call's outgoing messages: call id, a per-direction seq from 0, a timestamp.

A call's first messages go to the peer's identity key (:mod:`voice.crypto.envelope`); once
:meth:`CallAgreement.sealing_key <voice.call.agreement.CallAgreement.sealing_key>` gives the
call's own key, the rest are sealed with it (:mod:`voice.crypto.callenvelope`). Either way the
header is what the receiver's replay guard checks. The clock is a parameter (wall-clock
seconds, the receiver's freshness scale).
"""

from __future__ import annotations

from collections.abc import Callable

from voice.call import messages as m
from voice.crypto.callenvelope import seal_call
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
        self._call_key: bytes | None = None

    @property
    def call_keyed(self) -> bool:
        return self._call_key is not None

    def use_call_key(self, key: bytes) -> None:
        """Seal every later message with the call's own key (never back to the identity)."""
        self._call_key = key

    def seal(self, message: m.Message) -> bytes:
        return self.seal_payload(m.encode(message))

    def seal_payload(self, payload: bytes) -> bytes:
        """Seal an encoded message (the next seq, the clock's time now)."""
        header = EnvelopeHeader(self._call_id, self._seq, int(self._clock() * 1000))
        self._seq += 1
        if self._call_key is not None:
            return seal_call(self._call_key, header, payload)
        return seal(self._identity, self._peer_key, header, payload)
