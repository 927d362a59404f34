"""What a phone is configured with: the user's settings, and apart from them the test hooks.

:class:`PhoneConfig` is what the CLI fills in: who, which server, which timeouts. The
:class:`TestHooks` (clock, loss injection, datagram observer, key observer) are off by default
and the CLI never sets them: a key observer sees the SRTP keys of every call, like
``SSLKEYLOGFILE`` does for TLS, so they live in a type of their own that no user path builds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from voice.call.machine import CONNECT_TIMEOUT, NO_ANSWER_TIMEOUT, RING_GRACE
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CallKeys
from voice.crypto.sas import DEFAULT_SAS_BITS, MIN_SAFE_SAS_BITS
from voice.media.loss import LossModel
from voice.media.opus import OpusSettings
from voice.net.client import KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT
from voice.phone.history import CallLog

__all__ = ["RELAY_POLICIES", "PhoneConfig", "RelayPolicy", "TestHooks"]

RelayPolicy = Literal["auto", "always", "never"]
RELAY_POLICIES: tuple[RelayPolicy, ...] = ("auto", "always", "never")


@dataclass(frozen=True)
class TestHooks:
    """Test and benchmark hooks: off by default, never set by the CLI."""

    __test__ = False  # not a pytest test class, whatever its name

    clock: Callable[[], float] = time.time  # wall clock: envelope timestamps and freshness
    loss: LossModel | None = None  # MediaSession loss model on our outgoing RTP
    send_filter: Callable[[bytes], bool] | None = None  # MediaSession send filter (False: drop)
    on_datagram_sent: Callable[[bytes], None] | None = None  # sees every SRTP/SRTCP datagram
    rtcp_bye: bool = True  # say goodbye in RTCP too (off: a test sees the hangup envelope alone)
    addresses: Callable[[], Collection[str]] | None = None  # stands in for this machine's
    # interface addresses in the phone's address watch (set: watched even for a loopback server)
    key_observer: Callable[[bytes, CallKeys], None] | None = None
    """Called with (call_id, keys) once a call's keys exist. The keys are erased in place when
    the call ends: copy what you keep (``bytes(bytearray(keys.srtp_gcm_tx))``)."""


@dataclass(frozen=True)
class PhoneConfig:
    server_url: str  # wss://HOST:PORT (ws:// only to loopback, unless insecure)
    user: str
    identity: Identity
    contacts: ContactBook
    fallback_urls: tuple[str, ...] = ()  # other addresses of the same deployment (instances
    # behind no load balancer): tried when server_url fails; every one must present the same
    # server name and id as the first login (SignalingLink), and passes the same TLS checks
    host_addresses: Sequence[str] | None = None  # ICE host candidates; None: every usable
    # interface, plus 127.0.0.1 when the signaling server is on loopback
    relay: RelayPolicy = "auto"  # always: TURN only; never: no relay; auto: relay unless the
    # peer is a VERIFIED contact (docs/media.md "Relay policy")
    no_answer_timeout: float = NO_ANSWER_TIMEOUT  # caller gives up; callee rings ring_grace more
    ring_grace: float = RING_GRACE
    connect_timeout: float = CONNECT_TIMEOUT  # callee accepted but keys never became ready
    ice_timeout: float = 10.0  # ICE checks, per call
    media_timeout: float = 30.0  # reconnect window: no audio this long (ICE restarts failed)
    request_timeout: float = 10.0  # every request to the signaling server
    expected_server: str | None = None  # refuse a server that names itself differently
    expected_server_id: str | None = None  # refuse another deployment's challenge (server id)
    ca_file: Path | None = None  # PEM CAs that verify wss:// (None: the system CAs)
    insecure: bool = False  # allow plain ws:// to a host that is not loopback
    opus: OpusSettings = field(default_factory=OpusSettings)
    sas_bits: int = DEFAULT_SAS_BITS  # 20..64: fewer would let a MITM grind a matching SAS
    replay_journal: Path | None = None  # replay memory kept across restarts (CLI: config dir)
    keepalive_interval: float = KEEPALIVE_INTERVAL  # ping the signaling server this often,
    keepalive_timeout: float = KEEPALIVE_TIMEOUT  # the link is dead without a pong this long
    reconnect: bool = True  # a lost signaling session is logged in again (False: it ends)
    reconnect_delay: float = 0.5  # first backoff ceiling; doubles per failed attempt,
    reconnect_max_delay: float = 15.0  # up to this (full jitter: a random wait below it)
    call_log: CallLog | None = None  # where ended and missed calls are recorded (CLI: config dir)
    hooks: TestHooks = field(default_factory=TestHooks)

    def __post_init__(self) -> None:
        for name in ("no_answer_timeout", "connect_timeout", "ice_timeout", "media_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("keepalive_interval", "keepalive_timeout", "reconnect_delay"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.reconnect_max_delay < self.reconnect_delay:
            raise ValueError("reconnect_max_delay must be >= reconnect_delay")
        if self.server_url in self.fallback_urls or len(set(self.fallback_urls)) < len(
            self.fallback_urls
        ):
            raise ValueError("fallback_urls must not repeat an address")
        if self.request_timeout <= 0 or self.ring_grace < 0:
            raise ValueError("request_timeout must be > 0 and ring_grace >= 0")
        if self.relay not in RELAY_POLICIES:
            raise ValueError(f"relay must be one of {', '.join(RELAY_POLICIES)}")
        if not MIN_SAFE_SAS_BITS <= self.sas_bits <= 64:
            raise ValueError(f"sas_bits must be {MIN_SAFE_SAS_BITS}..64: fewer is guessable")
