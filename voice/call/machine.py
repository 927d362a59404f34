"""The call state machine: one call seen from one side, pure, driven by an explicit table.

``TABLE[(state, type(event))]`` (voice/call/table.py) names the handler and the states it may
lead to; a missing key means the input makes no sense in that state and is rejected with the
state untouched (docs/call-states.md draws the same table, and a test keeps the two equal).
Inputs are received messages (:meth:`CallMachine.receive`, which first checks the call id and
the sender's role) and local events (:meth:`CallMachine.handle`). Each returns a :class:`Step`
with the effects for the controller. The machine holds no secret: the controller runs the key
agreement when asked (DeriveKeys) and reports back (KeysReady, CommitmentMismatch, BadKey).

"Connected" for the user (ShowSas) means more than CONNECTED: the first authenticated SRTP
packet from the peer arrived (MediaFlowing). A CONNECTED call that gets none within
``connect_timeout`` fails with ``no_media_path``; one whose audio stops is not ended here but by
MediaLost, once the shell's reconnect window (ICE restarts) ran out. A caller whose ``offer``
rings nowhere within ``ring_timeout`` fails ``unreachable``, not "no answer".

ICE parameters: the offer and ringing carry them inside the committed descriptions, except the
callee's candidates for a caller who is not a verified contact: its ringing carries none, and
the candidates follow the ``accept`` in an ``ice`` message (generation 0, call-sealed). ICE starts
on each side only when it has the peer's candidates. Later ``ice`` messages restart ICE.

Hold (:mod:`voice.call.hold`): in a CONNECTED call either user may hold and resume; each change
is a ``hold`` or ``resume`` message with the sender's epoch, and a HoldChanged effect on the side
whose state changed. A stale epoch, or a hold outside CONNECTED, is refused like any bad input.

Media starts only when both hold: our keys are ready and the call is accepted (the callee's user
accepted / the caller received ``accept``). The caller sends ``reveal`` once its keys are ready;
the callee sends ``accept`` once its keys are ready, so a fast user can accept before ``reveal``
arrives: the machine waits in CONNECTING. An ``accept`` before our reveal is refused (an honest
callee cannot have keys yet).
"""

from __future__ import annotations

from typing import Any, Final

from voice.call import events as ev
from voice.call import messages as msg
from voice.call.events import EndReason, Event, FailReason, Role, State, Step
from voice.call.hold import HoldControl, HoldRefused
from voice.call.table import TABLE, transitions
from voice.crypto.keyschedule import CALL_ID_BYTES

__all__ = ["SENT_BY", "TABLE", "CallMachine", "transitions"]

NO_ANSWER_TIMEOUT: Final = 60.0
RING_TIMEOUT: Final = 25.0  # the callee's phone answers an offer with ringing at once, after at
# most request_timeout (10 s) for ICE servers and as much to gather its candidates
RING_GRACE: Final = 5.0  # the callee rings this much longer, so the caller's cancel comes first
CONNECT_TIMEOUT: Final = 20.0

SENT_BY: Final[dict[type[Any], Role | None]] = {
    msg.Offer: Role.CALLER,
    msg.Reveal: Role.CALLER,
    msg.Cancel: Role.CALLER,
    msg.Ringing: Role.CALLEE,
    msg.Accept: Role.CALLEE,
    msg.Decline: Role.CALLEE,
    msg.Busy: Role.CALLEE,
    msg.Hangup: None,  # either side
    msg.CallError: None,
    msg.Ice: None,
    msg.Hold: None,
    msg.Resume: None,
}


class _Refuse(Exception):
    """A handler's guard failed; raised before anything was changed."""


class CallMachine:
    """One call from one side. Never raises on input: bad input gives a rejected Step."""

    def __init__(
        self,
        *,
        role: Role,
        peer: str,
        call_id: bytes,
        no_answer_timeout: float = NO_ANSWER_TIMEOUT,
        ring_grace: float = RING_GRACE,
        connect_timeout: float = CONNECT_TIMEOUT,
        ring_timeout: float = RING_TIMEOUT,
        max_hold_changes: int = msg.MAX_HOLD_EPOCH,
    ) -> None:
        if len(call_id) != CALL_ID_BYTES:
            raise ValueError(f"call_id must be {CALL_ID_BYTES} bytes")
        self.role: Final = role
        self.peer: Final = peer
        self.call_id: Final = bytes(call_id)
        self.no_answer_timeout = no_answer_timeout
        self.ring_grace = ring_grace
        self.connect_timeout = connect_timeout
        self.ring_timeout = ring_timeout
        self.state = State.IDLE
        self.reason: EndReason | FailReason | None = None
        self.detail: str | None = None
        self.deadline: float | None = None
        self.keys_ready = False
        self.accepted = False
        self.ice_connected = False
        self.media_flowing = False
        self._keys_asked = False
        self._dialed_at = 0.0
        self._ice_started = False
        self._defer_candidates = False  # callee: send our candidates only after accept
        self._remote: dict[str, Any] | None = None  # the peer's committed description
        self._ringing = False
        self._media = False
        self._offer: msg.Offer | None = None
        self._reveal: msg.Reveal | None = None
        self._hold = HoldControl(max_hold_changes)

    @property
    def hold(self) -> ev.HoldState:
        """Who holds the call (nobody before CONNECTED; as it was, once the call ended)."""
        return self._hold.state

    # ---- entry points ----------------------------------------------------------------------

    def receive(self, now: float, call_id: bytes, message: msg.Message) -> Step:
        """A message from the peer, already opened from an envelope with this ``call_id``."""
        if call_id != self.call_id:
            return self._refused("unknown call id")
        if type(message) not in SENT_BY:
            return self._refused("not a call message")
        sender = SENT_BY[type(message)]
        if sender is self.role:
            return self._refused(f"{message.TYPE} is never sent by the {sender.value}'s peer")
        return self._apply(now, message)

    def handle(self, now: float, event: ev.LocalEvent) -> Step:
        """A local event: user action, key-agreement outcome, transport event or tick."""
        if type(event) in SENT_BY:
            return self._refused("messages go through receive()")
        return self._apply(now, event)

    def _apply(self, now: float, event: Event) -> Step:
        rule = TABLE.get((self.state, type(event)))
        if rule is None:
            if isinstance(event, ev.Tick):
                return Step(self.state)  # a tick where no deadline runs is simply nothing
            return self._refused(f"{type(event).__name__} makes no sense in {self.state.name}")
        effects: list[ev.Effect] = []
        try:
            new = getattr(self, rule.handler)(event, now, effects)
        except _Refuse as refusal:
            return self._refused(str(refusal))
        assert new in rule.targets, (self.state, type(event), new)
        self.state = new
        return Step(new, tuple(effects))

    def _refused(self, why: str) -> Step:
        return Step(self.state, (), why)

    # ---- handlers (guards first, then changes) ---------------------------------------------

    def _finish(
        self,
        fx: list[ev.Effect],
        reason: EndReason | FailReason,
        *,
        send: msg.Message | None = None,
        detail: str | None = None,
    ) -> State:
        if send is not None:
            fx.append(ev.SendMessage(send))
        if self._ringing:
            fx.append(ev.StopRinging())
            self._ringing = False
        if self._media:
            fx.append(ev.StopMedia())
            self._media = False
        fx.append(ev.EndCall(reason, detail))
        self.reason, self.detail, self.deadline = reason, detail, None
        return State.FAILED if isinstance(reason, FailReason) else State.ENDED

    def _fail(self, fx: list[ev.Effect], reason: FailReason, *, tell: bool = True) -> State:
        """Fail the call; tell the peer unless it never heard of it or is gone."""
        told = tell and self.state is not State.IDLE
        return self._finish(fx, reason, send=msg.CallError(reason.value) if told else None)

    def _connect(self, now: float, fx: list[ev.Effect]) -> State:
        if self.role is Role.CALLEE:
            fx.append(ev.SendMessage(msg.Accept()))
            if self._defer_candidates:
                assert self._offer is not None
                fx += [ev.SendCandidates(), ev.StartIce(self._offer.description)]
                self._ice_started = True
        fx.append(ev.StartMedia())
        self._media = True
        self.deadline = now + self.connect_timeout  # for the first authenticated packet
        return State.CONNECTED

    def _start_ice(self, description: dict[str, Any], fx: list[ev.Effect]) -> None:
        self._ice_started = True
        fx.append(ev.StartIce(description))

    def _on_dial(self, e: ev.UserDial, now: float, fx: list[ev.Effect]) -> State:
        if self.role is not Role.CALLER:
            raise _Refuse("only the caller dials")
        self._reveal = e.reveal
        self._dialed_at = now
        self.deadline = now + min(self.ring_timeout, self.no_answer_timeout)
        fx.append(ev.SendMessage(e.offer))
        return State.DIALING

    def _on_offer(self, e: msg.Offer, now: float, fx: list[ev.Effect]) -> State:
        self._offer = e
        self.deadline = now + self.no_answer_timeout + self.ring_grace
        fx.append(ev.PrepareRinging(e))
        return State.OFFERED

    def _on_ringing_ready(self, e: ev.RingingReady, now: float, fx: list[ev.Effect]) -> State:
        assert self._offer is not None
        fx.append(ev.SendMessage(e.ringing))
        if has_candidates(e.ringing.description):
            self._start_ice(self._offer.description, fx)
        else:
            self._defer_candidates = True
        fx.append(ev.Ring())
        self._ringing = True
        return State.RINGING_IN

    def _on_ringing(self, e: msg.Ringing, now: float, fx: list[ev.Effect]) -> State:
        fx.append(
            ev.DeriveKeys(e.eph_b, e.continuity_b, e.description, e.versions, e.version, e.mlkem_ct)
        )
        self._remote = e.description
        if has_candidates(e.description):  # else they follow the accept (an ``ice`` message)
            self._start_ice(e.description, fx)
        fx.append(ev.Ringback())
        self._keys_asked = self._ringing = True
        self.deadline = self._dialed_at + self.no_answer_timeout
        return State.RINGING_OUT

    def _on_reveal(self, e: msg.Reveal, now: float, fx: list[ev.Effect]) -> State:
        if self._keys_asked:
            raise _Refuse("second reveal")
        assert self._offer is not None
        self._keys_asked = True
        fx.append(ev.DeriveKeys(e.eph_a, e.continuity_a, self._offer.description))
        return self.state

    def _check_keys_pending(self) -> None:
        if not self._keys_asked or self.keys_ready:
            raise _Refuse("no key agreement is pending")

    def _on_keys_ready(self, e: ev.KeysReady, now: float, fx: list[ev.Effect]) -> State:
        self._check_keys_pending()
        self.keys_ready = True
        if self.role is Role.CALLER:
            assert self._reveal is not None
            fx.append(ev.SendMessage(self._reveal))
        return self._connect(now, fx) if self.state is State.CONNECTING else self.state

    def _on_commitment_mismatch(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        self._check_keys_pending()
        if self.role is not Role.CALLEE:
            raise _Refuse("only the callee checks a commitment")
        return self._fail(fx, FailReason.COMMITMENT_MISMATCH)

    def _on_bad_key(self, e: ev.BadKey, now: float, fx: list[ev.Effect]) -> State:
        self._check_keys_pending()
        return self._fail(fx, FailReason.BAD_KEY)

    def _on_accept_received(self, e: msg.Accept, now: float, fx: list[ev.Effect]) -> State:
        if not self.keys_ready:
            raise _Refuse("accept before our reveal")
        self.accepted = True
        fx.append(ev.StopRinging())
        self._ringing = False
        return self._connect(now, fx)

    def _on_user_accept(self, e: ev.UserAccept, now: float, fx: list[ev.Effect]) -> State:
        self.accepted = True
        fx.append(ev.StopRinging())
        self._ringing = False
        if self.keys_ready:
            return self._connect(now, fx)
        self.deadline = now + self.connect_timeout
        return State.CONNECTING

    def _on_decline_local(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.DECLINED_LOCAL, send=msg.Decline())

    def _on_cancel_local(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.CANCELLED_LOCAL, send=msg.Cancel())

    def _on_hangup_local(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.HANGUP_LOCAL, send=msg.Hangup())

    def _on_glare_lost(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.GLARE_LOST, send=msg.Cancel())

    def _on_declined(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.DECLINED_REMOTE)

    def _on_busy(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.BUSY)

    def _on_cancelled(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.CANCELLED_REMOTE)

    def _on_hung_up(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.HANGUP_REMOTE)

    def _on_tick(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        if self.deadline is None or now < self.deadline:
            return self.state
        if self.state is State.CONNECTING:
            return self._fail(fx, FailReason.SETUP_TIMEOUT)
        if self.state is State.CONNECTED:
            return self._fail(fx, FailReason.NO_MEDIA_PATH)
        if self.state is State.DIALING:  # not even ringing: the phone is not there
            return self._finish(fx, FailReason.UNREACHABLE, send=msg.Cancel())
        cancel = msg.Cancel() if self.role is Role.CALLER else None
        return self._finish(fx, EndReason.NO_ANSWER, send=cancel)

    def _on_remote_error(self, e: msg.CallError, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, FailReason.REMOTE_ERROR, detail=e.reason)

    def _on_ice_connected(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        self.ice_connected = True
        return self.state

    def _on_key_changed(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._fail(fx, FailReason.KEY_CHANGED)

    def _on_bad_message(self, e: ev.BadMessage, now: float, fx: list[ev.Effect]) -> State:
        return self._fail(fx, e.reason)  # bad_message, or unsupported_version from the agreement

    def _on_ice_failed(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._fail(fx, FailReason.ICE_FAILED)

    def _on_media_failed(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._fail(fx, FailReason.MEDIA_FAILED)

    def _on_peer_vanished(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._fail(fx, FailReason.PEER_VANISHED, tell=False)

    def _on_media_flowing(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        if self.media_flowing:
            raise _Refuse("media already flowing")
        self.media_flowing, self.deadline = True, None
        fx.append(ev.ShowSas())
        return self.state

    def _on_media_lost(self, e: ev.MediaLost, now: float, fx: list[ev.Effect]) -> State:
        detail = f"no audio for {e.seconds:.0f} s"
        send = msg.CallError(FailReason.MEDIA_LOST.value)  # if the peer can still hear it
        return self._finish(fx, FailReason.MEDIA_LOST, send=send, detail=detail)

    def _on_peer_hung_up(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        return self._finish(fx, EndReason.HANGUP_REMOTE)

    def _on_ice(self, e: msg.Ice, now: float, fx: list[ev.Effect]) -> State:
        if e.generation > 0:
            if self.state is not State.CONNECTED:
                raise _Refuse("an ICE restart before the call connected")
            fx.append(ev.RestartIce(e))
            return self.state
        if self.role is not Role.CALLER or self._ice_started or self._remote is None:
            raise _Refuse("unexpected candidates")
        committed = self._remote.get("ice")  # the peer's, committed but never checked here
        if not isinstance(committed, dict):
            raise _Refuse("candidates for a description without ICE parameters")
        remote = dict(self._remote)
        remote["ice"] = {**committed, "candidates": e.ice["candidates"]}
        self._start_ice(remote, fx)
        return self.state

    def _on_user_hold(
        self, e: ev.UserHold | ev.UserResume, now: float, fx: list[ev.Effect]
    ) -> State:
        try:
            message = self._hold.user(isinstance(e, ev.UserHold))
        except HoldRefused as refusal:
            raise _Refuse(str(refusal)) from None
        fx += [ev.HoldChanged(self._hold.state), ev.SendMessage(message)]
        return self.state

    def _on_hold(self, e: msg.Hold | msg.Resume, now: float, fx: list[ev.Effect]) -> State:
        try:
            changed = self._hold.receive(e)
        except HoldRefused as refusal:
            raise _Refuse(str(refusal)) from None
        if changed:
            fx.append(ev.HoldChanged(self._hold.state))
        return self.state

    def _on_signaling_lost(self, e: object, now: float, fx: list[ev.Effect]) -> State:
        if self.state is State.CONNECTED:  # media needs no server: the call goes on
            return self.state
        return self._fail(fx, FailReason.SIGNALING_LOST, tell=False)  # nothing can be sent


def has_candidates(description: dict[str, Any]) -> bool:
    """Whether a committed media description carries ICE candidates (a callee's ringing to a
    stranger carries none: they follow the user's accept)."""
    ice = description.get("ice")
    return isinstance(ice, dict) and bool(ice.get("candidates"))
