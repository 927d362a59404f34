"""Two phones wired together in memory: the effects of one feed the other.

Each FakePhone plays the controller: it carries out effects, encodes and decodes every message
(so the wire format is exercised too), routes incoming messages with voice.call.phone, and runs the
real committed key agreement (voice.crypto.keyagreement). No sockets, no clock.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from voice.call import events as ev
from voice.call import messages as m
from voice.call import phone as ph
from voice.call.machine import CallMachine
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement, CallKeys
from voice.errors import BadCallMessage, BadPublicKey, CommitmentMismatch

LOW_ORDER_KEY = bytes(32)


@dataclass
class Wire:
    """FIFO of (sender, recipient, call_id, payload) with a drop filter."""

    phones: dict[str, FakePhone] = field(default_factory=dict)
    queue: deque[tuple[str, str, bytes, bytes]] = field(default_factory=deque)
    now: float = 0.0
    drop: set[str] = field(default_factory=set)  # message types to drop

    def add(self, name: str) -> FakePhone:
        self.phones[name] = FakePhone(name, self)
        return self.phones[name]

    def send(self, sender: str, to: str, call_id: bytes, payload: bytes) -> None:
        if m.decode(payload).TYPE not in self.drop:
            self.queue.append((sender, to, call_id, payload))

    def deliver_one(self) -> None:
        sender, to, call_id, payload = self.queue.popleft()
        self.phones[to].on_envelope(sender, call_id, payload)

    def run(self, limit: int = 100) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            self.deliver_one()
        raise AssertionError("messages keep flowing")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for phone in self.phones.values():
            for machine in list(phone.calls.values()):
                phone.step(machine, machine.tick(self.now))


class FakePhone:
    def __init__(self, name: str, wire: Wire) -> None:
        self.name = name
        self.wire = wire
        self.identity = os.urandom(32)  # stands for the Ed25519 public key
        self.calls: dict[bytes, CallMachine] = {}
        self.log: list[tuple[bytes, ev.Effect]] = []
        self.rejected: list[str] = []
        self.keys: dict[bytes, CallKeys] = {}
        self.tamper_reveal = False  # reveal another eph_a than the one committed to
        self.bad_eph_b = False  # answer with a low-order key
        self._agreements: dict[bytes, CallerKeyAgreement | CalleeKeyAgreement] = {}
        self._descriptions: dict[bytes, dict[str, object]] = {}

    # -- user actions --
    def dial(self, peer: str, call_id: bytes | None = None) -> CallMachine:
        decision = ph.decide_dial(self.infos(), peer=peer)
        assert isinstance(decision, ph.Dial), decision
        call_id = call_id or os.urandom(16)
        machine = CallMachine(role=ev.Role.CALLER, peer=peer, call_id=call_id)
        self.calls[call_id] = machine
        ka = CallerKeyAgreement(
            me=self.identity,
            peer=self.wire.phones[peer].identity,
            call_id=call_id,
            my_name=self.name,
            peer_name=peer,
        )
        self._agreements[call_id] = ka
        desc = self._descriptions[call_id] = {"from": self.name, "ufrag": os.urandom(4).hex()}
        eph_a = os.urandom(32) if self.tamper_reveal else ka.eph_a
        reveal = m.Reveal(eph_a, ka.continuity_a)
        self.step(machine, machine.dial(self.wire.now, m.Offer(ka.commitment, desc), reveal))
        return machine

    def infos(self) -> list[ph.CallInfo]:
        return [ph.CallInfo.of(c) for c in self.calls.values()]

    def only_live(self) -> CallMachine:
        live = [c for c in self.calls.values() if not c.state.terminal]
        assert len(live) == 1, [(c.call_id.hex(), c.state) for c in self.calls.values()]
        return live[0]

    def do(self, machine: CallMachine, event: ev.LocalEvent) -> ev.Step:
        step = machine.handle(self.wire.now, event)
        self.step(machine, step)
        return step

    def effects(self, call_id: bytes) -> list[ev.Effect]:
        return [e for cid, e in self.log if cid == call_id]

    def sent(self, call_id: bytes) -> list[str]:
        return [e.message.TYPE for e in self.effects(call_id) if isinstance(e, ev.SendMessage)]

    # -- the controller's half --
    def on_envelope(self, sender: str, call_id: bytes, payload: bytes) -> None:
        try:
            message = m.decode(payload)
        except BadCallMessage:
            if call_id in self.calls:
                self.do(self.calls[call_id], ev.BadMessage())
            return
        decision = ph.route_message(self.infos(), peer=sender, call_id=call_id, message=message)
        if isinstance(decision, ph.Deliver):
            machine = self.calls[call_id]
            step = machine.receive(self.wire.now, call_id, message)
            if not step.ok:
                self.rejected.append(step.rejected or "")
            self.step(machine, step)
        elif isinstance(decision, ph.AnswerBusy):
            self.wire.send(self.name, sender, call_id, m.encode(m.Busy()))
        elif isinstance(decision, ph.LoseGlare | ph.Answer):
            if isinstance(decision, ph.LoseGlare):
                self.do(self.calls[decision.abandon], ev.GlareLost())
            assert isinstance(message, m.Offer)
            machine = CallMachine(role=ev.Role.CALLEE, peer=sender, call_id=call_id)
            self.calls[call_id] = machine
            self.step(machine, machine.receive(self.wire.now, call_id, message))
        elif isinstance(decision, ph.Reject):
            self.rejected.append(decision.reason)
        else:
            self.rejected.append(type(decision).__name__)

    def step(self, machine: CallMachine, step: ev.Step) -> None:
        for effect in step.effects:
            self.log.append((machine.call_id, effect))
            self.carry_out(machine, effect)

    def carry_out(self, machine: CallMachine, effect: ev.Effect) -> None:
        cid = machine.call_id
        if isinstance(effect, ev.SendMessage):
            self.wire.send(self.name, machine.peer, cid, m.encode(effect.message))
        elif isinstance(effect, ev.PrepareRinging):
            callee = CalleeKeyAgreement(
                me=self.identity,
                peer=self.wire.phones[machine.peer].identity,
                call_id=cid,
                commitment=effect.offer.commitment,
                my_name=self.name,
                peer_name=machine.peer,
            )
            self._agreements[cid] = callee
            answer = callee.answer()
            desc = self._descriptions[cid] = {"from": self.name}
            eph_b = LOW_ORDER_KEY if self.bad_eph_b else answer.eph_b
            ringing = m.Ringing(eph_b, answer.continuity_b, desc)
            self.step(machine, machine.ringing_ready(self.wire.now, ringing))
        elif isinstance(effect, ev.DeriveKeys):
            self.do(machine, self.derive(cid, effect))

    def derive(self, cid: bytes, fx: ev.DeriveKeys) -> ev.LocalEvent:
        ka = self._agreements[cid]
        own = m.canonical_description(self._descriptions[cid])
        remote = m.canonical_description(fx.remote_description)
        try:
            if isinstance(ka, CallerKeyAgreement):
                ka.receive_answer(
                    eph_b=fx.peer_eph,
                    continuity_b=fx.peer_continuity,
                    caller_description=own,
                    callee_description=remote,
                )
                self.keys[cid] = ka.keys()
            else:
                self.keys[cid] = ka.receive_reveal(
                    eph_a=fx.peer_eph,
                    continuity_a=fx.peer_continuity,
                    caller_description=remote,
                    callee_description=own,
                )
        except CommitmentMismatch:
            return ev.CommitmentMismatch()
        except BadPublicKey:
            return ev.BadKey()
        return ev.KeysReady()
