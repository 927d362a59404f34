"""What a phone is configured with: the user's settings, and apart from them the test hooks.

:class:`PhoneConfig` is what the CLI fills in: who, which server, which timeouts. The
:class:`TestHooks` (clock, loss injection, datagram observer, key observer) are off by default
and the CLI never sets them: a key observer sees the SRTP keys of every call, like
``SSLKEYLOGFILE`` does for TLS, so they live in a type of their own that no user path builds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voice.call.machine import CONNECT_TIMEOUT, NO_ANSWER_TIMEOUT, RING_GRACE
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CallKeys
from voice.crypto.sas import DEFAULT_SAS_BITS, MIN_SAFE_SAS_BITS
from voice.media.loss import LossModel
from voice.media.opus import OpusSettings

__all__ = ["PhoneConfig", "TestHooks"]


@dataclass(frozen=True)
class TestHooks:
    """Test and benchmark hooks: off by default, never set by the CLI."""

    __test__ = False  # not a pytest test class, whatever its name

    clock: Callable[[], float] = time.time  # wall clock: envelope timestamps and freshness
    loss: LossModel | None = None  # MediaSession loss model on our outgoing RTP
    send_filter: Callable[[bytes], bool] | None = None  # MediaSession send filter (False: drop)
    on_datagram_sent: Callable[[bytes], None] | None = None  # sees every SRTP/SRTCP datagram
    key_observer: Callable[[bytes, CallKeys], None] | None = None
    """Called with (call_id, keys) once a call's keys exist. The keys are erased in place when
    the call ends: copy what you keep (``bytes(bytearray(keys.srtp_gcm_tx))``)."""


@dataclass(frozen=True)
class PhoneConfig:
    server_url: str  # wss://HOST:PORT (ws:// only to loopback, unless insecure)
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
    expected_server_id: str | None = None  # refuse another deployment's challenge (server id)
    ca_file: Path | None = None  # PEM CAs that verify wss:// (None: the system CAs)
    insecure: bool = False  # allow plain ws:// to a host that is not loopback
    opus: OpusSettings = field(default_factory=OpusSettings)
    sas_bits: int = DEFAULT_SAS_BITS  # 20..64: fewer would let a MITM grind a matching SAS
    replay_journal: Path | None = None  # replay memory kept across restarts (CLI: config dir)
    hooks: TestHooks = field(default_factory=TestHooks)

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
