"""The vocabulary of the call state machine: states, reasons, inputs and effects (pure data).

Inputs are the received call messages (:mod:`voice.call.messages`) plus the local events below.
Effects are instructions for the asyncio controller, carried out in the order given.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from voice.call.messages import Ice, Message, Offer, Reveal, Ringing


class Role(enum.Enum):
    CALLER = "caller"
    CALLEE = "callee"


class State(enum.Enum):
    IDLE = "idle"
    DIALING = "dialing"  # caller: offer sent, waiting for ringing
    RINGING_OUT = "ringing_out"  # caller: the callee's phone rings; reveal once keys are ready
    OFFERED = "offered"  # callee: offer taken, controller prepares eph_b and description
    RINGING_IN = "ringing_in"  # callee: our phone rings, ringing sent
    CONNECTING = "connecting"  # callee: the user accepted, waiting for reveal and keys
    CONNECTED = "connected"  # media runs
    ENDED = "ended"  # terminal: normal end, see EndReason
    FAILED = "failed"  # terminal: see FailReason

    @property
    def terminal(self) -> bool:
        return self in (State.ENDED, State.FAILED)


class EndReason(enum.Enum):
    HANGUP_LOCAL = "hangup_local"
    HANGUP_REMOTE = "hangup_remote"
    DECLINED_LOCAL = "declined_local"
    DECLINED_REMOTE = "declined_remote"
    BUSY = "busy"
    CANCELLED_LOCAL = "cancelled_local"
    CANCELLED_REMOTE = "cancelled_remote"
    NO_ANSWER = "no_answer"
    GLARE_LOST = "glare_lost"  # both called each other; the peer's call won


class FailReason(enum.Enum):
    KEY_CHANGED = "key_changed"
    COMMITMENT_MISMATCH = "commitment_mismatch"
    BAD_KEY = "bad_key"  # the peer's ephemeral key is malformed or of low order
    ICE_FAILED = "ice_failed"
    MEDIA_FAILED = "media_failed"
    PEER_VANISHED = "peer_vanished"
    BAD_MESSAGE = "bad_message"
    SETUP_TIMEOUT = "setup_timeout"  # accepted, but keys never became ready
    REMOTE_ERROR = "remote_error"  # the peer sent `error`; its reason is in the detail
    SIGNALING_LOST = "signaling_lost"  # our signaling session ended while the call was set up
    UNREACHABLE = "unreachable"  # the callee's phone never rang: offline, or gone dark
    NO_MEDIA_PATH = "no_media_path"  # accepted, but no authenticated audio ever arrived
    MEDIA_LOST = "media_lost"  # the audio stopped and did not come back (reconnect window)
    UNSUPPORTED_VERSION = "unsupported_version"  # no key-agreement version in common (an app
    # too old or too new), or the callee's choice was not the best common one (a downgrade)


# ---- local inputs (received messages are inputs too) ----------------------------------------


@dataclass(frozen=True)
class UserDial:
    """Place the call. The controller built the offer and keeps eph_a's secret half."""

    offer: Offer
    reveal: Reveal


@dataclass(frozen=True)
class RingingReady:
    """Callee: eph_b and the local description are ready (answer to PrepareRinging)."""

    ringing: Ringing


@dataclass(frozen=True)
class UserAccept:
    pass


@dataclass(frozen=True)
class UserDecline:
    pass


@dataclass(frozen=True)
class UserHangup:
    """Hang up, whatever the state: cancels while dialing, declines while ringing."""


@dataclass(frozen=True)
class GlareLost:
    """Caller: the peer called us at the same time and its call won; abandon ours."""


@dataclass(frozen=True)
class KeysReady:
    """Key agreement succeeded (answer to DeriveKeys): SRTP keys and SAS exist.

    The caller sends its reveal only now, so it never reveals to a bad answer."""


@dataclass(frozen=True)
class CommitmentMismatch:
    """Callee: the revealed eph_a does not match the offer's commitment."""


@dataclass(frozen=True)
class BadKey:
    """The key agreement refused the peer's ephemeral key (keyagreement.BadPublicKey)."""


@dataclass(frozen=True)
class KeyChanged:
    """The peer's identity key differs from the pinned one."""


@dataclass(frozen=True)
class BadMessage:
    """An envelope for this call held a payload that failed to decode, or (``reason``) the
    key agreement cannot run what the peer asked for (voice.call.agreement)."""

    reason: FailReason = FailReason.BAD_MESSAGE


@dataclass(frozen=True)
class IceConnected:
    pass


@dataclass(frozen=True)
class IceFailed:
    pass


@dataclass(frozen=True)
class MediaFailed:
    pass


@dataclass(frozen=True)
class PeerVanished:
    """The signaling server says the peer is gone (offline, disconnected)."""


@dataclass(frozen=True)
class MediaFlowing:
    """The first SRTP packet from the peer passed authentication: only now is the call
    "connected" for the user (and the SAS shown)."""


@dataclass(frozen=True)
class MediaLost:
    """Connected, but no authenticated audio from the peer for the reconnect window."""

    seconds: float


@dataclass(frozen=True)
class PeerHungUp:
    """An authenticated RTCP BYE from the peer: it hung up (even if its hangup envelope could
    not reach the server)."""


@dataclass(frozen=True)
class SignalingLost:
    """Our signaling session ended. Setup needs it (the call fails); a CONNECTED call's media
    is peer to peer, so it goes on until hangup, media timeout or ICE consent ends it."""


@dataclass(frozen=True)
class Tick:
    """Time passed; the machine checks its deadline against ``now``."""


@dataclass(frozen=True)
class UserHold:
    """Put the connected call on hold: tell the peer, then neither play nor send audio."""


@dataclass(frozen=True)
class UserResume:
    """Take our hold off (the call stays held while the peer holds it too)."""


LocalEvent = (
    UserDial
    | RingingReady
    | UserAccept
    | UserDecline
    | UserHangup
    | GlareLost
    | KeysReady
    | CommitmentMismatch
    | BadKey
    | KeyChanged
    | BadMessage
    | IceConnected
    | IceFailed
    | MediaFailed
    | PeerVanished
    | SignalingLost
    | MediaFlowing
    | MediaLost
    | PeerHungUp
    | Tick
    | UserHold
    | UserResume
)
Event = LocalEvent | Message

# ---- effects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendMessage:
    message: Message


@dataclass(frozen=True)
class PrepareRinging:
    """Callee: make eph_b and the local description for this offer, then feed RingingReady."""

    offer: Offer


@dataclass(frozen=True)
class StartIce:
    """Start ICE in the background towards the peer's description."""

    remote_description: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class DeriveKeys:
    """Run the key agreement with the peer's key and description (feed it to the transcript
    through canonical_description); answer KeysReady, CommitmentMismatch or BadKey."""

    peer_eph: bytes
    peer_continuity: bytes
    remote_description: dict[str, Any] = field(hash=False)
    peer_versions: tuple[int, ...] = ()  # caller: the callee's versions, from its ringing,
    version: int | None = None  # the version it chose,
    peer_ciphertext: bytes = field(default=b"", repr=False)  # and its ML-KEM ciphertext


@dataclass(frozen=True)
class Ring:
    """Callee: ring the local phone."""


@dataclass(frozen=True)
class Ringback:
    """Caller: play the ringback tone (the peer's phone rings)."""


@dataclass(frozen=True)
class StopRinging:
    """Stop Ring or Ringback."""


@dataclass(frozen=True)
class StartMedia:
    """Keys are installed and the call is accepted: send and play audio."""


@dataclass(frozen=True)
class ShowSas:
    """Show the short authentication string to the user."""


@dataclass(frozen=True)
class StopMedia:
    pass


@dataclass(frozen=True)
class SendCandidates:
    """Callee: send our candidates (an ``ice`` message of generation 0), now that the user
    accepted a caller who was not a pinned contact."""


@dataclass(frozen=True)
class RestartIce:
    """The peer restarted ICE (``ice`` of generation 1 and up): answer it and run the checks."""

    message: Ice


@dataclass(frozen=True)
class HoldState:
    """Who holds the call: we (``local``), the peer (``remote``), or both."""

    local: bool = False
    remote: bool = False

    @property
    def held(self) -> bool:
        """Held by either side: no audio is played, and silence is sent instead of ours."""
        return self.local or self.remote


@dataclass(frozen=True)
class HoldChanged:
    """The hold state changed: while ``state.held``, send digital silence in place of the
    microphone (same packet sizes and times) and play nothing; tell the user."""

    state: HoldState


@dataclass(frozen=True)
class EndCall:
    """Terminal: tear everything down and erase the call's secrets."""

    reason: EndReason | FailReason
    detail: str | None = None

    @property
    def failed(self) -> bool:
        return isinstance(self.reason, FailReason)


Effect = (
    SendMessage
    | PrepareRinging
    | StartIce
    | DeriveKeys
    | Ring
    | Ringback
    | StopRinging
    | StartMedia
    | ShowSas
    | StopMedia
    | SendCandidates
    | RestartIce
    | HoldChanged
    | EndCall
)


@dataclass(frozen=True)
class Step:
    """What one input did: its effects, or why it was rejected (state left untouched)."""

    state: State
    effects: tuple[Effect, ...] = ()
    rejected: str | None = None

    @property
    def ok(self) -> bool:
        return self.rejected is None


@dataclass(frozen=True)
class Outcome:
    """How a call ended (from its EndCall): a normal EndReason or a FailReason, with the peer's
    detail if any."""

    reason: EndReason | FailReason
    detail: str | None = None

    @property
    def failed(self) -> bool:
        return isinstance(self.reason, FailReason)

    def __str__(self) -> str:
        text: str = self.reason.value
        return text + (f" ({self.detail})" if self.detail else "")
