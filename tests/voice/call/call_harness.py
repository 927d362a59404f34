"""Two phones wired together in memory: the effects of one feed the other.

Each FakePhone plays the asyncio shell with the pure core's own pieces, as
:mod:`voice.phone` does: it seals every message (:mod:`voice.call.outbound`), hands every
delivery to :class:`voice.call.inbound.Inbound` (open, freshness, pinned key, busy and glare),
and answers the key effects with :class:`voice.call.agreement.CallAgreement`. No sockets, no
asyncio; the clock is the wire's.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from voice.call import events as ev
from voice.call import inbound as ib
from voice.call import messages as m
from voice.call import routing as ph
from voice.call.agreement import CallAgreement, Parties
from voice.call.machine import SENT_BY, CallMachine
from voice.call.outbound import CallSealer
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CallKeys
from voice.crypto.replay import ReplayGuard

LOW_ORDER_KEY = bytes(32)


@dataclass
class Wire:
    """FIFO of (sender, recipient, sealed body) with a drop filter by message type."""

    home: Path  # contact books live here
    phones: dict[str, FakePhone] = field(default_factory=dict)
    queue: deque[tuple[str, str, bytes]] = field(default_factory=deque)
    now: float = 0.0
    drop: set[str] = field(default_factory=set)  # message types to drop

    def add(self, name: str) -> FakePhone:
        self.phones[name] = FakePhone(name, self, ContactBook(self.home / f"{name}.json"))
        return self.phones[name]

    def clock(self) -> float:
        return self.now

    def send(self, sender: str, to: str, call_id: bytes, payload: bytes) -> None:
        """Seal ``payload`` (an encoded message, or anything) from ``sender`` to ``to``."""
        try:
            kind = m.decode(payload).TYPE
        except Exception:
            kind = None
        if kind not in self.drop:
            body = self.phones[sender].sealer(to, call_id).seal_payload(payload)
            self.queue.append((sender, to, body))

    def deliver_one(self) -> None:
        sender, to, body = self.queue.popleft()
        self.phones[to].on_envelope(sender, body)

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
                phone.step(machine, machine.handle(self.now, ev.Tick()))


class FakePhone:
    def __init__(self, name: str, wire: Wire, contacts: ContactBook) -> None:
        self.name = name
        self.wire = wire
        self.identity = Identity.generate()
        self.contacts = contacts
        self.inbound = ib.Inbound(self.identity, contacts, ReplayGuard(clock=wire.clock))
        self.calls: dict[bytes, CallMachine] = {}
        self.log: list[tuple[bytes, ev.Effect]] = []
        self.rejected: list[str] = []
        self.warnings: list[ib.KeyChangedWarning] = []
        self.tamper_reveal = False  # reveal another eph_a than the one committed to
        self.bad_eph_b = False  # answer with a low-order key
        self.private_ice = False  # as for a caller that is not a pinned contact: no candidates
        self.started_ice: dict[bytes, list[dict[str, object]]] = {}  # StartIce descriptions
        self._peer_keys: dict[bytes, bytes] = {}
        self.peer_used_call_key: set[bytes] = set()
        self._agreements: dict[bytes, CallAgreement] = {}
        self._sealers: dict[tuple[str, bytes], CallSealer] = {}

    @property
    def keys(self) -> dict[bytes, CallKeys]:
        return {cid: a.keys for cid, a in self._agreements.items() if a.keys is not None}

    def sealer(self, to: str, call_id: bytes) -> CallSealer:
        key = (to, call_id)
        if key not in self._sealers:
            peer_key = self.wire.phones[to].identity.public_key
            self._sealers[key] = CallSealer(self.identity, peer_key, call_id, self.wire.clock)
        return self._sealers[key]

    # -- user actions --
    def dial(self, peer: str, call_id: bytes | None = None) -> CallMachine:
        infos = [ph.CallInfo(c.call_id, c.peer, c.role, c.state) for c in self.calls.values()]
        decision = ph.decide_dial(infos, peer=peer)
        assert isinstance(decision, ph.Dial), decision
        call_id = call_id or os.urandom(16)
        peer_key = self.wire.phones[peer].identity.public_key
        self.contacts.check(peer, peer_key)
        machine = self._new_call(ev.Role.CALLER, peer, peer_key, call_id)
        dial = self._agreements[call_id].dial(self.description())
        if self.tamper_reveal:
            dial = dataclasses.replace(
                dial, reveal=dataclasses.replace(dial.reveal, eph_a=os.urandom(32))
            )
        self.step(machine, machine.handle(self.wire.now, dial))
        return machine

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

    # -- the shell's half --
    def on_envelope(self, sender: str, body: bytes) -> None:
        views = [
            ib.CallView(
                cid,
                c.peer,
                self._peer_keys[cid],
                c.role,
                c.state,
                self._agreements[cid].opening_key(),
                cid in self.peer_used_call_key,
                0.0 if c.state is ev.State.CONNECTED else None,  # the wire's time stands still
            )
            for cid, c in self.calls.items()
        ]
        for action in self.inbound.receive(views, sender, body):
            if isinstance(action, ib.Drop):
                self.rejected.append(action.reason)
            elif isinstance(action, ib.Post):
                if action.call_keyed:
                    self.peer_used_call_key.add(action.call_id)
                machine = self.calls[action.call_id]
                if type(action.event) in SENT_BY:
                    step = machine.receive(self.wire.now, action.call_id, action.event)  # type: ignore[arg-type]
                else:
                    step = machine.handle(self.wire.now, action.event)  # type: ignore[arg-type]
                if not step.ok:
                    self.rejected.append(step.rejected or "")
                self.step(machine, step)
            elif isinstance(action, ib.StartCall):
                if action.replaces is not None:
                    self.do(self.calls[action.replaces], ev.GlareLost())
                machine = self._new_call(ev.Role.CALLEE, sender, action.peer_key, action.call_id)
                self.step(machine, machine.receive(self.wire.now, action.call_id, action.offer))
            elif isinstance(action, ib.SendBusy):
                self.wire.send(self.name, sender, action.call_id, m.encode(m.Busy()))
            elif isinstance(action, ib.Warn):
                self.warnings.append(action.warning)

    def step(self, machine: CallMachine, step: ev.Step) -> None:
        if step.ok:  # as the shell does: seal with the call's key once the peer has it
            connected = machine.state is ev.State.CONNECTED
            key = self._agreements[machine.call_id].sealing_key(connected=connected)
            sealer = self.sealer(machine.peer, machine.call_id)
            if key is not None and not sealer.call_keyed:
                sealer.use_call_key(key)
        for effect in step.effects:
            self.log.append((machine.call_id, effect))
            self.carry_out(machine, effect)

    def carry_out(self, machine: CallMachine, effect: ev.Effect) -> None:
        cid = machine.call_id
        if isinstance(effect, ev.SendMessage):
            self.wire.send(self.name, machine.peer, cid, m.encode(effect.message))
        elif isinstance(effect, ev.PrepareRinging):
            ready = self._agreements[cid].ring(effect.offer, self.description(self.private_ice))
            if self.bad_eph_b:
                bad = dataclasses.replace(ready.ringing, eph_b=LOW_ORDER_KEY)
                ready = dataclasses.replace(ready, ringing=bad)
            self.step(machine, machine.handle(self.wire.now, ready))
        elif isinstance(effect, ev.DeriveKeys):
            self.do(machine, self._agreements[cid].derive(effect))
        elif isinstance(effect, ev.StartIce):
            self.started_ice.setdefault(cid, []).append(effect.remote_description)
        elif isinstance(effect, ev.SendCandidates):
            ice = m.Ice(0, {"candidates": self.candidates()})
            self.wire.send(self.name, machine.peer, cid, m.encode(ice))

    def candidates(self) -> list[str]:
        return [f"candidate of {self.name}"]

    def description(self, private: bool = False) -> dict[str, object]:
        """A media description as the shell commits to (the machine looks at its candidates)."""
        ice = {
            "ufrag": self.name,
            "pwd": "p" * 22,
            "candidates": [] if private else self.candidates(),
        }
        return {"from": self.name, "ice": ice}

    def _new_call(self, role: ev.Role, peer: str, peer_key: bytes, call_id: bytes) -> CallMachine:
        machine = CallMachine(role=role, peer=peer, call_id=call_id)
        self.calls[call_id] = machine
        self._peer_keys[call_id] = peer_key
        parties = Parties(self.identity.public_key, self.name, peer_key, peer, call_id)
        self._agreements[call_id] = CallAgreement(parties)
        return machine


Pair = tuple[Wire, FakePhone, FakePhone]


def ringing(pair: Pair) -> tuple[CallMachine, CallMachine]:
    """Alice dials Bob: both ring, and the key agreement ran while they did."""
    wire, alice, bob = pair
    a = alice.dial("bob")
    wire.run()
    b = bob.calls[a.call_id]
    assert (a.state, b.state) == (ev.State.RINGING_OUT, ev.State.RINGING_IN)
    assert a.keys_ready and b.keys_ready
    return a, b


def connected(pair: Pair) -> tuple[CallMachine, CallMachine]:
    """Bob accepts a ringing call: both connected."""
    wire, _, bob = pair
    a, b = ringing(pair)
    bob.do(b, ev.UserAccept())
    wire.run()
    assert (a.state, b.state) == (ev.State.CONNECTED, ev.State.CONNECTED)
    return a, b
