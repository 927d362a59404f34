"""What each CallMachine handler does in the Promela model (:mod:`voice.call.promela`).

One function, :func:`branches`, mirrors voice/call/machine.py handler by handler: for a table
entry it gives each outcome as a guard on machine ``m``, Promela statements and the target
state. Guards say what the real conditions are: keys only from a reveal equal to the commitment
(callee) or a key not refused (caller); an ``accept`` only once our keys are ready; audio only
from a peer whose media runs. Where the table's choice depends on time (a tick before or after
the deadline), the model chooses. The offer and dial decisions are tabulated from
:mod:`voice.call.routing` itself, over every state of a phone's two machines.

Key values are tokens: ``HONEST`` (the key committed to), ``FORGED`` (another one) and ``LOW``
(one the key agreement refuses). ``checked[c]`` is a ghost: set when call ``c``'s callee derives
keys from a reveal equal to the offer's commitment, whatever the guards say, so the property
"no media keys without a checked reveal" does not trust the mechanism it checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Final

from voice.call import events as ev
from voice.call import routing
from voice.call.events import Role, State
from voice.call.table import TABLE, Rule

__all__ = [
    "CALL",
    "GLARE",
    "GLARE_HOSTILE",
    "SCENARIOS",
    "Branch",
    "Config",
    "ModelError",
    "branches",
    "dial_allowed",
    "fault",
    "gate",
    "offer_routes",
]

Table = Mapping[tuple[State, type[Any]], Rule]
OfferRule = Callable[..., routing.OfferDecision]

_S = State
_USER: Final = (ev.UserAccept, ev.UserDecline, ev.UserHangup, ev.UserHold, ev.UserResume)
_FAULTS: Final = (  # at most one per run (MediaLost also comes for real)
    ev.KeyChanged,
    ev.BadMessage,
    ev.IceFailed,
    ev.MediaFailed,
    ev.PeerVanished,
    ev.SignalingLost,
    ev.MediaLost,
)
_IDS: Final = (b"\x01" * 16, b"\x02" * 16)  # call ids of phone 0's and phone 1's calls
_RESET: Final = (  # EndCall erases the call's secrets
    "asked[m] = 0; keys[m] = 0; val[m] = 0; commit[m] = 0; flowing[m] = 0; "
    "holding[m] = 0; autoacc[m] = 0"
)
_PENDING: Final = "asked[m] && !keys[m]"
_OVER: Final = "(st[PEER(m)] == S_ENDED || st[PEER(m)] == S_FAILED)"  # the peer's call is over
_STUTTER: Final = "stutter"
_CONNECT: Final = (  # voice/call/machine.py _connect: the callee accepts (a stranger: ice too)
    "if :: ROLE(m) == 1 -> snd(m, M_Accept, 0); snd(m, M_Ice, 0) :: else -> skip fi",
    "seen[m] = GLARE",
)


class ModelError(Exception):
    """The table holds something the model has no semantics for: extend promela_rules."""


@dataclass(frozen=True)
class Config:
    """One scenario. ``glare``: both users dial at once (else phone 0's user dials when they
    like). ``hostile``: the network loses messages and replays one, and deadlines pass at any
    moment; otherwise they pass only when nothing else can happen (they are long, messages are
    fast). The network always reorders. ``attacks``: one key is forged (a reveal of another key
    than the committed one, a ringing or a commitment with a key to refuse), and one fault may
    strike (key changed, ICE failed, ...). ``users``: users accept, decline, hang up and hold
    when they like, and may walk away; otherwise they only dial, and hang up once they hear
    each other. The last three fields exist for mutation controls, models spin must refute."""

    name: str
    glare: bool
    hostile: bool
    attacks: bool
    users: bool
    check_commitment: bool = True
    decide_offer: OfferRule = routing.decide_offer
    table: Table = field(default_factory=lambda: TABLE)


CALL: Final = Config("call", glare=False, hostile=True, attacks=True, users=True)
GLARE: Final = Config("glare", glare=True, hostile=False, attacks=False, users=False)
GLARE_HOSTILE: Final = Config("glare-hostile", glare=True, hostile=True, attacks=False, users=False)
SCENARIOS: Final = (CALL, GLARE, GLARE_HOSTILE)


@dataclass(frozen=True)
class Branch:
    guard: str  # on machine ``m``, besides its state
    body: tuple[str, ...]
    target: State
    outer: str = ""  # tested only where the input arises (``timeout``)


def _send(kind: str, value: str = "0") -> str:
    return f"snd(m, M_{kind}, {value})"


def _end(target: State, *sent: str) -> Branch:
    return Branch("", (*sent, _RESET), target)


def _fail(state: State, tell: bool = True) -> Branch:
    told = tell and state is not _S.IDLE  # nobody heard of a call that failed while idle
    return _end(_S.FAILED, *((_send("CallError"),) if told else ()))


def branches(handler: str, state: State, event: type[Any], cfg: Config) -> list[Branch]:
    """The outcomes of ``handler`` for ``event`` in ``state`` (guards first, as the machine)."""
    stay, once = state, (f"{_STUTTER} = 0",)
    if handler == "_on_dial":
        choose = "if :: commit[m] = HONEST :: forges > 0 -> forges--; commit[m] = LOW fi"
        return [Branch("", (choose, _send("Offer", "commit[m]")), _S.DIALING)]
    if handler == "_on_offer":
        return [Branch("", ("commit[m] = v",), _S.OFFERED)]
    if handler == "_on_ringing":
        return [Branch("", ("asked[m] = 1", "val[m] = v"), _S.RINGING_OUT)]
    if handler == "_on_ringing_ready":
        return [Branch("", (_send("Ringing", "HONEST"),), _S.RINGING_IN)]
    if handler == "_on_reveal":  # a second reveal is refused
        return [Branch("!asked[m]", ("asked[m] = 1", "val[m] = v"), stay)]
    if handler == "_on_keys_ready":
        checked = "val[m] == commit[m]" if cfg.check_commitment else "1"
        body = (
            "keys[m] = 1",
            "if :: ROLE(m) == 1 && val[m] == commit[m] -> checked[CALL(m)] = 1 :: else -> skip fi",
            f"if :: ROLE(m) == 0 -> {_send('Reveal', 'commit[m]')} :: else -> skip fi",
        )
        guard = f"{_PENDING} && val[m] != LOW && (ROLE(m) == 0 || {checked})"
        connect = _CONNECT if state is _S.CONNECTING else ()
        return [Branch(guard, (*body, *connect), _S.CONNECTED if connect else stay)]
    if handler == "_on_commitment_mismatch":
        guard = f"{_PENDING} && ROLE(m) == 1 && val[m] != commit[m]"
        return [Branch(guard, _fail(state).body, _S.FAILED)]
    if handler == "_on_bad_key":
        guard = f"{_PENDING} && val[m] == LOW && (ROLE(m) == 0 || val[m] == commit[m])"
        return [Branch(guard, _fail(state).body, _S.FAILED)]
    if handler == "_on_accept_received":  # before our keys (our reveal): refused
        return [Branch("keys[m]", _CONNECT, _S.CONNECTED)]
    if handler == "_on_user_accept":
        return [Branch("keys[m]", _CONNECT, _S.CONNECTED), Branch("!keys[m]", (), _S.CONNECTING)]
    if handler in ("_on_cancel_local", "_on_glare_lost"):
        return [_end(_S.ENDED, _send("Cancel"))]
    if handler == "_on_decline_local":
        return [_end(_S.ENDED, _send("Decline"))]
    if handler == "_on_hangup_local":
        return [_end(_S.ENDED, _send("Hangup"))]
    if handler in ("_on_busy", "_on_declined", "_on_cancelled", "_on_hung_up"):
        return [_end(_S.ENDED)]
    if handler == "_on_peer_hung_up":  # an authenticated RTCP BYE: the peer's media stopped
        return [Branch(_OVER, (_RESET,), _S.ENDED)]
    if handler == "_on_remote_error":
        return [_end(_S.FAILED)]
    if handler in ("_on_key_changed", "_on_bad_message", "_on_ice_failed", "_on_media_failed"):
        return [_fail(state)]
    if handler == "_on_peer_vanished":
        return [_fail(state, tell=False)]
    if handler == "_on_signaling_lost":  # media is peer to peer: a connected call goes on
        if state is _S.CONNECTED:
            return [Branch(_STUTTER, once, stay)]
        return [_fail(state, tell=False)]
    if handler == "_on_media_lost":  # a fault, or certain once the peer's call is over
        return [Branch(f"(faults > 0 || {_OVER})", _fail(state).body, _S.FAILED)]
    if handler == "_on_media_flowing":  # the first authenticated packet: the peer sends media
        return [Branch("!flowing[m] && st[PEER(m)] == S_CONNECTED", ("flowing[m] = 1",), stay)]
    if handler == "_on_ice_connected":
        return [Branch(_STUTTER, once, stay)]
    if handler in ("_on_ice", "_on_hold"):  # taken or refused, nothing the model keeps changes
        return [Branch("", (), stay)]
    if handler == "_on_user_hold":  # a hold spends the stutter, so hold-resume cannot loop
        held = event is ev.UserHold
        guard = f"!holding[m] && {_STUTTER}" if held else "holding[m]"
        body = (f"holding[m] = {int(held)}", *(once if held else ()))
        return [Branch(guard, (*body, _send("Hold" if held else "Resume")), stay)]
    if handler == "_on_tick":
        return [Branch(_STUTTER, once, stay), _deadline(state, cfg)]
    raise ModelError(f"no model for {handler} ({state.name}, {event.__name__})")


def _deadline(state: State, cfg: Config) -> Branch:
    """A tick at or after the deadline (CONNECTED has none once media flows)."""
    if state in (_S.CONNECTING, _S.CONNECTED):
        branch = _fail(state)
    elif state in (_S.DIALING, _S.RINGING_OUT):
        branch = _end(_S.FAILED if state is _S.DIALING else _S.ENDED, _send("Cancel"))
    else:
        branch = _end(_S.ENDED)
    guard = "!flowing[m]" if state is _S.CONNECTED else ""
    return Branch(guard, branch.body, branch.target, "" if cfg.hostile else "timeout")


def gate(event: type[Any], state: State, cfg: Config) -> str:
    """When the outside world may produce ``event`` at all (besides the handler's guard)."""
    if event is ev.UserHangup and state is _S.CONNECTED:  # a bounded call: once they hear
        return "(present || flowing[m])"  # each other, the talkers hang up in the end
    if event is ev.UserAccept:
        return "(present || autoacc[m])"  # glare: the loser's user already asked for it
    if event in _USER:
        return "present"
    if event in _FAULTS and event is not ev.MediaLost:  # its guard says when
        return "faults > 0"
    return ""


def fault(event: type[Any]) -> bool:
    """Whether taking ``event`` spends the run's one fault."""
    return event in _FAULTS


def _any(var: str, states: Iterable[State]) -> str:
    names = sorted({s.name for s in states})
    if len(names) == len(State):
        return "1"
    return "(" + " || ".join(f"{var} == S_{n}" for n in names) + ")"


def _known(call_id: bytes, role: Role, state: State) -> list[routing.CallInfo]:
    """The phone's view of one of its machines (an idle one is no call yet)."""
    return [] if state is _S.IDLE else [routing.CallInfo(call_id, "peer", role, state)]


def _calls(p: int, ours: State, theirs: State, elsewhere: bool) -> list[routing.CallInfo]:
    """Phone p's calls: its own, the peer's, and maybe one with a third party."""
    other = [routing.CallInfo(b"\x03" * 16, "carol", Role.CALLER, _S.CONNECTED)] * elsewhere
    return _known(_IDS[p], Role.CALLER, ours) + _known(_IDS[1 - p], Role.CALLEE, theirs) + other


def offer_routes(decide: OfferRule) -> dict[str, list[str]]:
    """Phone ``p``'s decision on the peer's offer, by name, for every state of its machines."""
    cases: dict[str, dict[tuple[int, State, bool], set[State]]] = {}
    for p, ours, theirs, busy in product((0, 1), State, State, (False, True)):
        decision = decide(_calls(p, ours, theirs, busy), peer="peer", call_id=_IDS[1 - p])
        if isinstance(decision, routing.LoseGlare) and decision.abandon != _IDS[p]:
            raise ModelError("glare abandons a call the model does not know")
        kind = type(decision).__name__
        cases.setdefault(kind, {}).setdefault((p, theirs, busy), set()).add(ours)
    return {
        kind: [
            f"(p == {p} && elsewhere[p] == {int(busy)} && st[IN(p)] == S_{theirs.name}"
            f" && {_any('st[OUT(p)]', ours)})"
            for (p, theirs, busy), ours in sorted(by_in.items(), key=lambda i: str(i[0]))
        ]
        for kind, by_in in cases.items()
    }


def dial_allowed() -> str:
    """Where decide_dial says Dial, for every state of phone p's other calls."""
    allowed = [
        f"(p == {p} && elsewhere[p] == {int(busy)} && st[IN(p)] == S_{theirs.name})"
        for p, theirs, busy in product((0, 1), State, (False, True))
        if isinstance(
            routing.decide_dial(_calls(p, _S.IDLE, theirs, busy), peer="peer"), routing.Dial
        )
    ]
    return "(" + " || ".join(allowed) + ")"
