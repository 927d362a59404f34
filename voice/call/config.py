"""What a phone is configured with, and the small values the call controller hands out.

:class:`PhoneConfig` holds the user's settings plus a few **test and benchmark hooks** (clock,
loss injection, datagram observer, key observer). The hooks are off by default and the CLI never
sets them: a key observer sees the SRTP keys of every call, like ``SSLKEYLOGFILE`` does for TLS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from voice.audio.base import AudioSink, AudioSource
from voice.call.events import EndReason, FailReason
from voice.call.machine import CONNECT_TIMEOUT, NO_ANSWER_TIMEOUT, RING_GRACE
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CallKeys
from voice.crypto.sas import DEFAULT_SAS_BITS, MIN_SAFE_SAS_BITS
from voice.media.ice import TurnServer
from voice.media.loss import LossModel
from voice.media.opus import OpusSettings

if TYPE_CHECKING:
    from voice.call.callsession import Call

__all__ = [
    "AudioFactory",
    "CallTimings",
    "KeyChangedWarning",
    "Outcome",
    "PhoneConfig",
    "turn_server_from",
]

AudioFactory = Callable[["Call"], tuple[AudioSource, AudioSink]]
"""Makes the audio source and sink of a call; the call's MediaSession owns (and closes) them."""


@dataclass(frozen=True)
class PhoneConfig:
    server_url: str  # ws://127.0.0.1:PORT
    user: str
    identity: Identity
    contacts: ContactBook
    host_addresses: Sequence[str] = ("127.0.0.1",)  # where ICE gathers host candidates
    use_turn: bool = False  # ask the server for TURN credentials for every call
    relay_only: bool = False  # media only through the TURN relay (needs use_turn)
    no_answer_timeout: float = NO_ANSWER_TIMEOUT  # caller gives up; callee rings ring_grace more
    ring_grace: float = RING_GRACE
    connect_timeout: float = CONNECT_TIMEOUT  # callee accepted but keys never became ready
    ice_timeout: float = 10.0  # ICE checks, per call
    media_timeout: float = 10.0  # connected, but nothing from the peer this long: peer vanished
    request_timeout: float = 10.0  # every request to the signaling server
    expected_server: str | None = None  # refuse a server that names itself differently
    opus: OpusSettings = field(default_factory=OpusSettings)
    sas_bits: int = DEFAULT_SAS_BITS  # 20..64: fewer would let a MITM grind a matching SAS
    replay_journal: Path | None = None  # replay memory kept across restarts (CLI: config dir)
    # ---- test and benchmark hooks: off by default, never set by the CLI ----
    clock: Callable[[], float] = time.time  # wall clock: envelope timestamps and freshness
    loss: LossModel | None = None  # MediaSession loss model on our outgoing RTP
    send_filter: Callable[[bytes], bool] | None = None  # MediaSession send filter (False: drop)
    on_datagram_sent: Callable[[bytes], None] | None = None  # sees every SRTP/SRTCP datagram
    key_observer: Callable[[bytes, CallKeys], None] | None = None
    """Called with (call_id, keys) once a call's keys exist. The keys are erased in place when
    the call ends: copy what you keep (``bytes(bytearray(keys.srtp_gcm_tx))``)."""

    def __post_init__(self) -> None:
        for name in ("no_answer_timeout", "connect_timeout", "ice_timeout", "media_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.request_timeout <= 0 or self.ring_grace < 0:
            raise ValueError("request_timeout must be > 0 and ring_grace >= 0")
        if self.relay_only and not self.use_turn:
            raise ValueError("relay_only needs use_turn")
        if not MIN_SAFE_SAS_BITS <= self.sas_bits <= 64:
            raise ValueError(f"sas_bits must be {MIN_SAFE_SAS_BITS}..64: fewer is guessable")


@dataclass
class CallTimings:
    """Event-loop times (``loop.time()``) of a call's milestones; None until they happen."""

    dialed_at: float | None = None  # caller: Phone.call() began
    offered_at: float | None = None  # callee: the offer arrived
    ringing_at: float | None = None  # the callee's phone rang (callee) / ringing arrived (caller)
    answered_at: float | None = None  # the callee accepted (callee) / accept arrived (caller)
    connected_at: float | None = None  # media started on this side
    first_audio_at: float | None = None  # first decoded frame from the peer was played out
    ended_at: float | None = None


@dataclass(frozen=True)
class Outcome:
    """How a call ended: a normal EndReason or a FailReason, with the peer's detail if any."""

    reason: EndReason | FailReason
    detail: str | None = None

    @property
    def failed(self) -> bool:
        return isinstance(self.reason, FailReason)

    def __str__(self) -> str:
        text: str = self.reason.value
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class KeyChangedWarning:
    """A contact called (or sent a call message) with another identity key than the pinned one.

    The call was refused and never rang. ``message`` says what to do (check the new fingerprint
    out of band, then ``voice trust USER FINGERPRINT``).
    """

    user: str
    old_fingerprint: str
    new_fingerprint: str
    message: str


_TURN_URI = re.compile(
    r"turn:(?P<host>\[[0-9a-fA-F:.]+\]|[^:?\[\]]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)


def turn_server_from(uris: Sequence[str], username: str, password: str) -> TurnServer | None:
    """The first usable ``turn:`` URI (RFC 7065) as a TurnServer; None if there is none."""
    for uri in uris:
        m = _TURN_URI.fullmatch(uri)
        if m is None:
            continue
        port = int(m["port"] or 3478)
        if not 0 < port < 65536:
            continue
        host = str(m["host"]).strip("[]")
        if m["transport"] == "tcp":
            return TurnServer(host, port, username, password, "tcp")
        return TurnServer(host, port, username, password, "udp")
    return None
