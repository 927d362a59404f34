"""Two real phones on a hostile network, driven by hypothesis (RuleBasedStateMachine).

The code under test is the real one: CallMachine, routing and Inbound (open, replay guard,
pinned keys, glare, busy), sealing and the key agreement, wired by the in-memory shell of
call_harness.py. The test owns the network in between: it delivers any message in flight (so
it reorders and delays), drops, duplicates, and replays any envelope ever sent, while the users
dial (both at once too: glare), accept, decline, hang up and hold, a caller may reveal another
key than it committed to, a callee may answer with a key to refuse, and the clock jumps.
After every step: each machine moved only along the table, no call has media or callee keys
without a reveal that matched its commitment, and the phones share at most one connected call.
At the end the network is emptied, the clock runs past every deadline and the users hang up
what still talks: every call must then be over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.voice.call.call_harness import FakePhone, Wire
from voice.call import events as ev
from voice.call import routing
from voice.call.events import Role, State
from voice.call.machine import CallMachine
from voice.call.table import TABLE, transitions
from voice.crypto.contacts import ContactBook

EDGES = {(a, b) for a, _, b in transitions()}
NAMES = ("alice", "bob")
USER_EVENTS = (ev.UserAccept(), ev.UserDecline(), ev.UserHangup(), ev.UserHold(), ev.UserResume())
SOMETIMES = st.integers(0, 3).map(lambda n: n == 0)  # a quarter of the calls
NETWORK = ("deliver",) * 3 + ("calm",) * 3 + ("drop", "duplicate", "replay")
MAX_DIALS = 4  # per run: glare, and calls after calls; few enough to stay quick


class TracingPhone(FakePhone):
    """The harness phone, keeping each call's sequence of states."""

    def __init__(self, name: str, wire: Wire, contacts: ContactBook) -> None:
        super().__init__(name, wire, contacts)
        self.trace: dict[bytes, list[State]] = {}

    def step(self, machine: CallMachine, step: ev.Step) -> None:
        self.trace.setdefault(machine.call_id, [State.IDLE]).append(machine.state)
        super().step(machine, step)


@dataclass
class HostileWire(Wire):
    """The harness wire, remembering every envelope it ever carried (for replays)."""

    history: list[tuple[str, str, bytes]] = field(default_factory=list)

    def add(self, name: str) -> TracingPhone:
        phone = TracingPhone(name, self, ContactBook(self.home / f"{name}.json"))
        self.phones[name] = phone
        return phone

    def send(self, sender: str, to: str, call_id: bytes, payload: bytes) -> None:
        before = len(self.queue)
        super().send(sender, to, call_id, payload)
        self.history.extend(list(self.queue)[before:])


class TwoPhones(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._home = TemporaryDirectory()
        self.wire = HostileWire(Path(self._home.name))
        self.phones = {name: self.wire.add(name) for name in NAMES}
        self.dials = 0
        self.tampered: set[bytes] = set()  # calls whose caller reveals another key

    def live(self, name: str) -> list[CallMachine]:
        return [c for c in self.phones[name].calls.values() if not c.state.terminal]

    # ---- users ---------------------------------------------------------------------------

    @initialize(
        glare=st.booleans(),
        high=st.booleans(),
        tamper=SOMETIMES,
        bad_answer=SOMETIMES,
        answered=st.booleans(),
    )
    def first_call(
        self, glare: bool, high: bool, tamper: bool, bad_answer: bool, answered: bool
    ) -> None:
        """Alice calls Bob, and with ``glare`` Bob calls Alice before either offer arrives;
        ``answered``: a calm network, and whoever rings accepts (the rules go on from there)."""
        self.dial("alice", high, tamper, bad_answer)
        if glare:
            self.dial("bob", not high, False, False)
        if answered:
            self.wire.run()
            for name in NAMES:
                for machine in self.live(name):
                    if machine.state is State.RINGING_IN:
                        self.phones[name].do(machine, ev.UserAccept())
            self.wire.run()

    @precondition(lambda self: self.dials < MAX_DIALS)
    @rule(who=st.sampled_from(NAMES), high=st.booleans(), tamper=SOMETIMES, bad_answer=SOMETIMES)
    def dial(self, who: str, high: bool, tamper: bool, bad_answer: bool) -> None:
        """``high``: a larger call id, which wins a glare (chosen, so that runs replay)."""
        phone, peer = self.phones[who], self.phones[NAMES[who == "alice"]]
        infos = [routing.CallInfo(c.call_id, c.peer, c.role, c.state) for c in phone.calls.values()]
        if not isinstance(routing.decide_dial(infos, peer=peer.name), routing.Dial):
            return
        self.dials += 1
        phone.tamper_reveal, peer.bad_eph_b = tamper, bad_answer
        machine = phone.dial(peer.name, bytes([0x40 * (1 + high) + self.dials]) * 16)
        if tamper:
            self.tampered.add(machine.call_id)

    @rule(who=st.sampled_from(NAMES), data=st.data())
    def user(self, who: str, data: st.DataObject) -> None:
        """Whatever the user can do now: accept, decline, hang up, hold or resume."""
        for machine in self.live(who):
            able = [e for e in USER_EVENTS if (machine.state, type(e)) in TABLE]
            able += [e for e in able if isinstance(e, ev.UserAccept)] * 3  # users mostly answer
            if able:
                self.phones[who].do(machine, data.draw(st.sampled_from(able)))  # may refuse

    @rule(who=st.sampled_from(NAMES))
    def audio_arrives(self, who: str) -> None:
        """The first authenticated packet: only from a peer whose media runs."""
        other = self.phones[NAMES[who == "alice"]]
        for machine in self.live(who):
            peer = other.calls.get(machine.call_id)
            talking = peer is not None and peer.state is State.CONNECTED
            if machine.state is State.CONNECTED and talking and not machine.media_flowing:
                self.phones[who].do(machine, ev.MediaFlowing())

    @rule(seconds=st.sampled_from([0.5] * 6 + [6.0, 21.0, 26.0, 66.0]))  # mostly short
    def time_passes(self, seconds: float) -> None:
        self.wire.advance(seconds)

    # ---- the network ---------------------------------------------------------------------

    @precondition(lambda self: bool(self.wire.queue) or bool(self.wire.history))
    @rule(act=st.sampled_from(NETWORK), pick=st.integers(min_value=0))
    def network(self, act: str, pick: int) -> None:
        """Deliver any message in flight (reorder, delay), all of them in order (a calm
        moment), drop one, duplicate one, or replay any envelope ever sent."""
        queue, history = self.wire.queue, self.wire.history
        if act == "replay":
            queue.append(history[pick % len(history)])
        elif not queue:
            return
        elif act == "calm":
            self.wire.run(limit=1000)
        elif act == "deliver":
            sender, to, body = queue[pick % len(queue)]
            del queue[pick % len(queue)]
            self.wire.phones[to].on_envelope(sender, body)
        elif act == "drop":
            del queue[pick % len(queue)]
        else:
            queue.append(queue[pick % len(queue)])

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def states_follow_the_table(self) -> None:
        for phone in self.phones.values():
            for call_id, states in phone.trace.items():
                for a, b in pairwise(states):
                    assert a is b or (a.name, b.name) in EDGES, (call_id.hex(), states)

    @invariant()
    def no_keys_or_media_without_a_checked_reveal(self) -> None:
        alice, bob = self.phones["alice"], self.phones["bob"]
        for phone, other in ((alice, bob), (bob, alice)):
            for call_id, machine in phone.calls.items():
                if machine.role is not Role.CALLEE:
                    continue
                media = [
                    ev.StartMedia() in side.effects(call_id)
                    for side in (phone, other)
                    if call_id in side.calls
                ]
                if not (machine.keys_ready or any(media)):
                    continue
                # keys from the committed key: the caller derived the same SAS
                assert call_id not in self.tampered, "keys from a reveal that was not committed"
                assert machine.keys_ready, "media before the callee's keys"
                assert phone.keys[call_id].sas == other.keys[call_id].sas

    @invariant()
    def at_most_one_connected_call(self) -> None:
        connected = {
            call_id
            for phone in self.phones.values()
            for call_id, machine in phone.calls.items()
            if machine.state is State.CONNECTED
        }
        assert len(connected) <= 1, connected
        for name in NAMES:
            assert len(self.live(name)) <= 1, [m.state for m in self.live(name)]

    def teardown(self) -> None:
        """The users stop; the network delivers what is left; every call must end."""
        try:
            self.wire.run(limit=1000)
            for _ in range(3):
                self.wire.advance(100.0)  # past every deadline
                self.wire.run(limit=1000)
            for name in NAMES:  # no timer ends a call with audio: its users hang up
                for machine in self.live(name):
                    assert machine.state is State.CONNECTED and machine.media_flowing
                    self.phones[name].do(machine, ev.UserHangup())
            self.wire.run(limit=1000)
            self.wire.advance(100.0)
            for name in NAMES:
                assert not self.live(name), [(m.state, m.media_flowing) for m in self.live(name)]
            # how often a run got as far as a connected call: --hypothesis-show-statistics
            traces = [t for phone in self.phones.values() for t in phone.trace.values()]
            event("a call connected" if any(State.CONNECTED in t for t in traces) else "none")
        finally:
            self._home.cleanup()


TwoPhones.TestCase.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)
test_two_phones_on_a_hostile_network = TwoPhones.TestCase
