"""The call state machine's transition table, as data (docs/call-states.md mirrors it).

``TABLE[(state, event type)]`` gives the name of the CallMachine handler and every state it may
lead to (more than one where a guard decides, e.g. a tick before or after the deadline). A pair
that is not here is rejected by the machine. Events named like messages mean "received".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from voice.call import events as ev
from voice.call import messages as msg
from voice.call.events import State


@dataclass(frozen=True)
class Rule:
    targets: frozenset[State]
    handler: str  # name of a CallMachine method (event, now, effects) -> State


_S = State
_ACTIVE: Final = (
    _S.DIALING,
    _S.RINGING_OUT,
    _S.OFFERED,
    _S.RINGING_IN,
    _S.CONNECTING,
    _S.CONNECTED,
)
_SETUP: Final = tuple(s for s in _ACTIVE if s is not _S.CONNECTED)  # needs signaling
_ICE_UP: Final = (_S.RINGING_OUT, _S.RINGING_IN, _S.CONNECTING, _S.CONNECTED)


def _build() -> dict[tuple[State, type[Any]], Rule]:
    table: dict[tuple[State, type[Any]], Rule] = {}

    def add(
        states: tuple[State, ...],
        event: type[Any],
        handler: str,
        *to: State,
        stay: bool = False,
    ) -> None:
        for state in states:
            assert (state, event) not in table, (state, event)
            table[state, event] = Rule(frozenset(to) | ({state} if stay else set()), handler)

    add((_S.IDLE,), ev.UserDial, "_on_dial", _S.DIALING)
    add((_S.IDLE,), msg.Offer, "_on_offer", _S.OFFERED)
    add((_S.IDLE, *_ACTIVE), ev.KeyChanged, "_on_key_changed", _S.FAILED)
    # caller, before accept
    add((_S.DIALING,), msg.Ringing, "_on_ringing", _S.RINGING_OUT)
    add((_S.DIALING,), msg.Busy, "_on_busy", _S.ENDED)
    add((_S.DIALING, _S.RINGING_OUT), msg.Decline, "_on_declined", _S.ENDED)
    add((_S.DIALING, _S.RINGING_OUT), ev.UserHangup, "_on_cancel_local", _S.ENDED)
    add((_S.DIALING, _S.RINGING_OUT), ev.GlareLost, "_on_glare_lost", _S.ENDED)
    add((_S.RINGING_OUT,), msg.Accept, "_on_accept_received", _S.CONNECTED)
    # callee, before accept
    add((_S.OFFERED,), ev.RingingReady, "_on_ringing_ready", _S.RINGING_IN)
    add((_S.OFFERED, _S.RINGING_IN), ev.UserDecline, "_on_decline_local", _S.ENDED)
    add((_S.OFFERED, _S.RINGING_IN), ev.UserHangup, "_on_decline_local", _S.ENDED)
    add((_S.RINGING_IN,), ev.UserAccept, "_on_user_accept", _S.CONNECTING, _S.CONNECTED)
    add((_S.RINGING_IN, _S.CONNECTING), msg.Reveal, "_on_reveal", stay=True)
    add((_S.RINGING_IN, _S.CONNECTING), ev.CommitmentMismatch, "_on_commitment_mismatch", _S.FAILED)
    add(
        (_S.OFFERED, _S.RINGING_IN, _S.CONNECTING, _S.CONNECTED),
        msg.Cancel,
        "_on_cancelled",
        _S.ENDED,
    )
    # keys, accept, media
    add((_S.RINGING_OUT, _S.RINGING_IN), ev.KeysReady, "_on_keys_ready", stay=True)
    add((_S.RINGING_OUT, _S.RINGING_IN, _S.CONNECTING), ev.BadKey, "_on_bad_key", _S.FAILED)
    add((_S.CONNECTING,), ev.KeysReady, "_on_keys_ready", _S.CONNECTED)
    add((_S.CONNECTING, _S.CONNECTED), ev.UserHangup, "_on_hangup_local", _S.ENDED)
    add(_ICE_UP, ev.IceConnected, "_on_ice_connected", stay=True)
    add(_ICE_UP, ev.IceFailed, "_on_ice_failed", _S.FAILED)
    add((_S.CONNECTED,), msg.Ice, "_on_ice", stay=True)  # after accept: call-sealed
    add((_S.CONNECTED,), ev.MediaFlowing, "_on_media_flowing", stay=True)
    add((_S.CONNECTED,), ev.MediaLost, "_on_media_lost", _S.FAILED)
    add((_S.CONNECTED,), ev.PeerHungUp, "_on_peer_hung_up", _S.ENDED)
    add(_ICE_UP, ev.MediaFailed, "_on_media_failed", _S.FAILED)
    # hold (voice.call.hold): only in a connected call
    add((_S.CONNECTED,), ev.UserHold, "_on_user_hold", stay=True)
    add((_S.CONNECTED,), ev.UserResume, "_on_user_hold", stay=True)
    add((_S.CONNECTED,), msg.Hold, "_on_hold", stay=True)
    add((_S.CONNECTED,), msg.Resume, "_on_hold", stay=True)
    # timers
    add((_S.DIALING,), ev.Tick, "_on_tick", _S.FAILED, stay=True)
    add(
        (_S.RINGING_OUT, _S.OFFERED, _S.RINGING_IN),
        ev.Tick,
        "_on_tick",
        _S.ENDED,
        stay=True,
    )
    add((_S.CONNECTING, _S.CONNECTED), ev.Tick, "_on_tick", _S.FAILED, stay=True)
    # anywhere in a live call
    add(_ACTIVE, msg.Hangup, "_on_hung_up", _S.ENDED)
    add(_ACTIVE, msg.CallError, "_on_remote_error", _S.FAILED)
    add(_ACTIVE, ev.BadMessage, "_on_bad_message", _S.FAILED)
    add(_ACTIVE, ev.PeerVanished, "_on_peer_vanished", _S.FAILED)
    add(_SETUP, ev.SignalingLost, "_on_signaling_lost", _S.FAILED)
    add((_S.CONNECTED,), ev.SignalingLost, "_on_signaling_lost", stay=True)  # media is P2P
    return table


TABLE: Final[dict[tuple[State, type[Any]], Rule]] = _build()


def transitions() -> set[tuple[str, str, str]]:
    """The table flattened to (from state, event name, to state): what the docs must list."""
    return {
        (state.name, event.__name__, target.name)
        for (state, event), rule in TABLE.items()
        for target in rule.targets
    }
