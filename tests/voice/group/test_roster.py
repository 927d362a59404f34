"""Group membership: a creator and members wired together in memory, plus attacks on the rules.

The :class:`Net` plays the session layer for every party: each Send effect is encoded with the
real wire format, queued, decoded at the recipient and fed to its state machine with the sender's
username and identity key (what a sealed envelope vouches for). Invitees accept at once.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.voice.group.test_messages import messages as any_message
from voice.group import messages as gm
from voice.group import roster as gr
from voice.group.roster import CreatorState, EndReason, MemberState, State, Step

GROUP = bytes(range(16))
SFU = "wss://sfu.example/janus"
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]


def identity_key(name: str) -> bytes:
    return bytes([NAMES.index(name) + 1]) * 32


def frame_key(name: str) -> bytes:
    return bytes([NAMES.index(name) + 101]) * 32


@dataclass
class Party:
    name: str
    machine: CreatorState | MemberState
    effects: list[gr.Effect] = field(default_factory=list)
    auto_accept: bool = True

    def changes(self) -> list[gr.MembershipChanged]:
        return [e for e in self.effects if isinstance(e, gr.MembershipChanged)]

    def ended(self) -> gr.Ended | None:
        return next((e for e in self.effects if isinstance(e, gr.Ended)), None)

    def delivered(self) -> list[gr.Deliver]:
        return [e for e in self.effects if isinstance(e, gr.Deliver)]


@dataclass
class Net:
    now: float = 0.0
    parties: dict[str, Party] = field(default_factory=dict)
    queue: deque[tuple[str, str, bytes]] = field(default_factory=deque)
    sent: list[tuple[str, str, gm.Message]] = field(default_factory=list)

    @property
    def creator(self) -> CreatorState:
        machine = self.parties["alice"].machine
        assert isinstance(machine, CreatorState)
        return machine

    def member(self, name: str) -> MemberState:
        machine = self.parties[name].machine
        assert isinstance(machine, MemberState)
        return machine

    def add_member(self, name: str, *, auto_accept: bool = True) -> MemberState:
        machine = MemberState(user=name, identity_key=identity_key(name))
        self.parties[name] = Party(name, machine, auto_accept=auto_accept)
        return machine

    def apply(self, name: str, step: Step) -> Step:
        """Carry out ``name``'s effects: queue what it sends, accept invites for it."""
        party = self.parties[name]
        party.effects += step.effects
        for effect in step.effects:
            if isinstance(effect, gr.Send):
                self.sent.append((name, effect.to, effect.message))
                self.queue.append((name, effect.to, gm.encode(effect.message)))
            elif isinstance(effect, gr.AskUser) and party.auto_accept:
                machine = self.member(name)
                self.apply(name, machine.accept(self.now, frame_key(name)))
        return step

    def inject(
        self, sender: str, to: str, message: gm.Message, *, key: bytes | None = None
    ) -> Step:
        """Deliver ``message`` now, as if sealed by ``sender`` (with ``key``, else its own)."""
        machine = self.parties[to].machine
        key = identity_key(sender) if key is None else key
        if isinstance(machine, CreatorState):
            step = machine.receive(self.now, sender, key, message)
        else:
            step = machine.receive(self.now, sender, key, message, pinned=True)
        return self.apply(to, step)

    def deliver_one(self) -> None:
        sender, to, data = self.queue.popleft()
        if to in self.parties:
            self.inject(sender, to, gm.decode(data))

    def run(self, limit: int = 500) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            self.deliver_one()
        raise AssertionError("messages keep flowing")

    def invite(self, *names: str) -> None:
        for name in names:
            if name not in self.parties:
                self.add_member(name)
            self.apply("alice", self.creator.invite(self.now, name))
        self.run()

    def sent_to(self, name: str) -> list[gm.Message]:
        return [m for _, to, m in self.sent if to == name]


def make_net() -> Net:
    net = Net()
    creator = CreatorState(
        user="alice",
        identity_key=identity_key("alice"),
        frame_key=frame_key("alice"),
        group=GROUP,
        sfu_url=SFU,
        room=1234,
        pin="pin-12345678",
    )
    net.parties["alice"] = Party("alice", creator)
    return net


@pytest.fixture
def net() -> Net:
    net = make_net()
    net.invite("bob", "carol", "dave")
    return net


def entry(net: Net, name: str) -> gm.Member:
    """``name``'s line in the creator's roster."""
    member = net.creator.member(name)
    assert member is not None, name
    return member


def assert_agree(net: Net, names: list[str], epoch: int) -> None:
    roster = net.creator.members
    assert [m.user for m in roster] == names
    for name in names:
        machine = net.parties[name].machine
        assert machine.epoch == epoch and machine.members == roster, name
        assert net.parties[name].changes()[-1].members == roster


# ---- the happy path --------------------------------------------------------------------------


def test_creator_and_three_members_agree(net: Net) -> None:
    assert_agree(net, ["alice", "bob", "carol", "dave"], epoch=3)
    assert [m.index for m in net.creator.members] == [0, 1, 2, 3]
    for name in ("bob", "carol", "dave"):
        assert net.member(name).state is State.JOINED
        assert gr.JoinRoom(SFU, 1234, "pin-12345678") in net.parties[name].effects
        entry = net.member(name).member(name)
        assert entry is not None and entry.frame_key == frame_key(name)
        assert entry.identity_key == identity_key(name)
    assert all(not p.machine.dropped for p in net.parties.values())


def test_a_join_bumps_the_epoch_and_everyone_sees_the_newcomer(net: Net) -> None:
    net.invite("erin")
    assert_agree(net, ["alice", "bob", "carol", "dave", "erin"], epoch=4)
    erin = entry(net, "erin")
    for name in ("alice", "bob", "carol", "dave"):
        change = net.parties[name].changes()[-1]
        assert change.epoch == 4 and change.joined == (erin,) and change.left == ()
    first = net.parties["erin"].changes()
    assert len(first) == 1 and first[0].joined == net.creator.members  # all new to erin


def test_creator_reports_every_change_to_its_own_key_layer(net: Net) -> None:
    changes = net.parties["alice"].changes()
    assert [c.epoch for c in changes] == [1, 2, 3]
    assert [[m.user for m in c.joined] for c in changes] == [["bob"], ["carol"], ["dave"]]


# ---- leaving ---------------------------------------------------------------------------------


def test_remove_bumps_the_epoch_and_the_removed_member_gets_no_later_roster(net: Net) -> None:
    carol = entry(net, "carol")
    net.apply("alice", net.creator.remove(net.now, "carol"))
    net.run()
    assert net.parties["carol"].ended() == gr.Ended(EndReason.REMOVED)
    assert net.member("carol").state is State.ENDED
    assert_agree(net, ["alice", "bob", "dave"], epoch=4)
    for name in ("alice", "bob", "dave"):
        assert net.parties[name].changes()[-1].left == (carol,)
    seen = len(net.sent_to("carol"))
    net.invite("erin")
    assert len(net.sent_to("carol")) == seen  # nothing more for carol
    assert_agree(net, ["alice", "bob", "dave", "erin"], epoch=5)
    assert entry(net, "erin").index == 4  # carol's index 2 is not given again


def test_leave_bumps_the_epoch_and_the_leaver_gets_no_later_roster(net: Net) -> None:
    net.apply("bob", net.member("bob").leave(net.now))
    assert net.parties["bob"].ended() == gr.Ended(EndReason.LEFT)
    net.run()
    assert_agree(net, ["alice", "carol", "dave"], epoch=4)
    assert not any(isinstance(m, gm.Removed) for m in net.sent_to("bob"))
    before = len(net.sent_to("bob"))
    net.invite("erin")
    assert len(net.sent_to("bob")) == before


def test_member_gone_acts_as_a_leave(net: Net) -> None:
    dave = entry(net, "dave")
    net.apply("alice", net.creator.member_gone(net.now, "dave"))
    net.run()
    assert_agree(net, ["alice", "bob", "carol"], epoch=4)
    assert net.parties["bob"].changes()[-1].left == (dave,)
    assert net.sent_to("dave")[-1].TYPE == "roster"  # nothing was sent to the vanished one


def test_end_ends_everyone(net: Net) -> None:
    net.apply("alice", net.creator.end(net.now))
    net.run()
    for name in ("bob", "carol", "dave"):
        assert net.parties[name].ended() == gr.Ended(EndReason.ENDED)
    assert net.parties["alice"].ended() == gr.Ended(EndReason.ENDED_LOCAL)


def test_a_stale_leave_from_an_earlier_membership_is_dropped(net: Net) -> None:
    old_leave = gm.Leave(GROUP, 2)  # bob was in epoch 2, left, and came back
    net.apply("bob", net.member("bob").leave(net.now))
    net.run()
    net.add_member("bob")
    net.invite("bob")
    assert net.creator.epoch == 5 and net.creator.member("bob") is not None
    step = net.inject("bob", "alice", old_leave)
    assert step.refused == "stale_epoch" and net.creator.member("bob") is not None


# ---- who may send what -----------------------------------------------------------------------


def current_roster(net: Net) -> gm.Roster:
    c = net.creator
    return gm.Roster(GROUP, c.epoch + 1, c.members, SFU, 1234, "pin-12345678")


def test_a_roster_from_a_non_creator_is_dropped(net: Net) -> None:
    forged = current_roster(net)
    step = net.inject("bob", "carol", forged)
    assert step.refused == "creator_only" and step.effects == ()
    assert net.member("carol").epoch == 3
    assert net.member("carol").dropped["creator_only"] == 1
    # the creator's name with another key is no better
    step = net.inject("alice", "carol", forged, key=identity_key("bob"))
    assert step.refused == "creator_only"


def test_a_replayed_roster_is_dropped(net: Net) -> None:
    rosters = [m for m in net.sent_to("bob") if isinstance(m, gm.Roster)]
    assert [r.epoch for r in rosters] == [1, 2, 3]
    for old in rosters:  # older and equal epochs
        step = net.inject("alice", "bob", old)
        assert step.refused == "stale_epoch" and step.effects == ()
    assert net.member("bob").dropped["stale_epoch"] == 3
    assert net.member("bob").epoch == 3


def test_a_roster_without_us_is_ignored() -> None:
    net = make_net()
    net.invite("bob", "carol")
    c = net.creator
    without_bob = tuple(m for m in c.members if m.user != "bob")
    step = net.inject("alice", "bob", gm.Roster(GROUP, 9, without_bob, SFU, 1234, "pin-12345678"))
    assert step.refused == "not_in_roster" and net.member("bob").epoch == 2


def test_a_sender_key_claiming_another_members_index_is_dropped(net: Net) -> None:
    forged = gm.SenderKey(GROUP, 3, entry(net, "carol").index, 0, 0, bytes(32))
    step = net.inject("bob", "dave", forged)
    assert step.refused == "wrong_index" and net.member("dave").dropped["wrong_index"] == 1
    assert not net.parties["dave"].delivered()
    own = gm.SenderKey(GROUP, 3, entry(net, "bob").index, 0, 0, bytes(32))
    step = net.inject("bob", "dave", own)
    assert step.effects == (gr.Deliver(entry(net, "bob"), own),)


def test_peer_messages_are_checked_alike_by_the_creator(net: Net) -> None:
    bob = entry(net, "bob")
    good = gm.Commit(GROUP, 3, bob.index, bytes(32))
    assert net.inject("bob", "alice", good).effects == (gr.Deliver(bob, good),)
    cases: list[tuple[str, gm.Message, bytes | None, str]] = [
        ("bob", gm.Commit(GROUP, 2, bob.index, bytes(32)), None, "stale_epoch"),
        ("bob", gm.Reveal(GROUP, 4, bob.index, bytes(32)), None, "future_epoch"),
        ("erin", gm.Reveal(GROUP, 3, 7, bytes(32)), None, "not_member"),
        ("bob", good, identity_key("erin"), "wrong_identity_key"),
        ("bob", gm.Commit(bytes(16), 3, bob.index, bytes(32)), None, "other_group"),
    ]
    for sender, message, key, reason in cases:
        assert net.inject(sender, "alice", message, key=key).refused == reason


def test_only_the_creator_may_send_creator_messages_and_members_take_no_joins(net: Net) -> None:
    assert net.inject("bob", "alice", current_roster(net)).refused == "creator_only"
    assert net.inject("bob", "alice", gm.End(GROUP)).refused == "creator_only"
    assert net.inject("bob", "carol", gm.End(GROUP)).refused == "creator_only"
    assert net.inject("bob", "carol", gm.Removed(GROUP, 9)).refused == "creator_only"
    assert net.inject("bob", "carol", gm.Join(GROUP, bytes(32))).refused == "not_creator"
    assert net.inject("erin", "alice", gm.Join(GROUP, bytes(32))).refused == "not_invited"
    assert net.inject("bob", "alice", gm.Join(GROUP, bytes(32))).refused == "already_member"
    assert net.inject("alice", "carol", gm.Removed(GROUP, 3)).refused == "stale_epoch"
    assert all(p.ended() is None for p in net.parties.values())


def test_a_ninth_member_is_refused() -> None:
    net = make_net()
    net.invite(*NAMES[1:8])
    assert len(net.creator.members) == 8
    net.invite("ivan")
    assert net.parties["ivan"].ended() == gr.Ended(EndReason.REFUSED)
    assert gr.InviteClosed("ivan", "full") in net.parties["alice"].effects
    assert_agree(net, NAMES[:8], epoch=7)
    assert not any(isinstance(m, gm.Roster) for m in net.sent_to("ivan"))


# ---- invites ---------------------------------------------------------------------------------


def test_an_invite_from_someone_not_pinned_is_dropped() -> None:
    bob = MemberState(user="bob", identity_key=identity_key("bob"))
    invite = gm.Invite(GROUP, "alice", SFU, 1, "pin-12345678")
    step = bob.receive(0.0, "alice", identity_key("alice"), invite, pinned=False)
    assert step.refused == "not_pinned" and bob.state is State.IDLE
    assert bob.refused_invites == ("alice",)  # so that bob's screen can say who was refused
    step = bob.receive(0.0, "mallory", identity_key("alice"), invite, pinned=True)
    assert step.refused == "creator_mismatch"
    step = bob.receive(0.0, "alice", identity_key("alice"), invite, pinned=True)
    assert step.effects == (gr.AskUser(invite),)
    assert bob.state.value == "invited"  # (mypy narrowed the state to IDLE above)


def test_the_names_of_refused_strangers_are_bounded() -> None:
    bob = MemberState(user="bob", identity_key=identity_key("bob"))
    for n in range(3 * gr.MAX_REFUSED_SHOWN):
        name = f"stranger{n}"
        bob.receive(0.0, name, bytes(32), gm.Invite(GROUP, name, SFU, 1, "pin-12345678"))
    assert len(bob.refused_invites) == gr.MAX_REFUSED_SHOWN
    assert bob.refused_invites[-1] == f"stranger{3 * gr.MAX_REFUSED_SHOWN - 1}"


def test_declining_an_invite_tells_the_creator() -> None:
    net = make_net()
    net.add_member("bob", auto_accept=False)
    net.invite("bob")
    net.apply("bob", net.member("bob").decline(net.now))
    net.run()
    assert net.parties["bob"].ended() == gr.Ended(EndReason.DECLINED)
    assert gr.InviteClosed("bob", "declined") in net.parties["alice"].effects
    assert net.creator.invited == {} and net.creator.epoch == 0


def test_an_unanswered_invite_lapses() -> None:
    net = make_net()
    net.add_member("bob", auto_accept=False)
    net.invite("bob")
    net.now = gr.INVITE_TIMEOUT
    net.apply("alice", net.creator.tick(net.now))
    net.run()
    assert gr.InviteClosed("bob", "expired") in net.parties["alice"].effects
    assert net.parties["bob"].ended() == gr.Ended(EndReason.ENDED)


def test_a_join_without_a_roster_gives_up() -> None:
    bob = MemberState(user="bob", identity_key=identity_key("bob"))
    invite = gm.Invite(GROUP, "alice", SFU, 1, "pin-12345678")
    bob.receive(0.0, "alice", identity_key("alice"), invite, pinned=True)
    bob.accept(0.0, frame_key("bob"))
    assert bob.tick(gr.JOIN_TIMEOUT - 1).effects == ()
    step = bob.tick(gr.JOIN_TIMEOUT)
    assert step.effects == (gr.Send("alice", gm.Leave(GROUP, 0)), gr.Ended(EndReason.NO_ROSTER))


def test_a_leave_before_the_first_roster_still_removes_the_joiner() -> None:
    net = make_net()
    net.add_member("bob")
    net.apply("alice", net.creator.invite(net.now, "bob"))
    net.deliver_one()  # the invite: bob accepts, its join is queued
    net.apply("bob", net.member("bob").leave(net.now))  # leave(epoch 0) follows the join
    net.run()
    assert [m.user for m in net.creator.members] == ["alice"] and net.creator.epoch == 2


# ---- ordering --------------------------------------------------------------------------------


def test_a_sender_key_ahead_of_its_roster_waits_for_it(net: Net) -> None:
    net.apply("alice", net.creator.invite(net.now, "erin"))
    net.add_member("erin")
    net.deliver_one()  # invite -> erin; join queued
    net.deliver_one()  # join -> alice; rosters of epoch 4 queued to bob, carol, dave, erin
    bob = entry(net, "bob")
    early = gm.SenderKey(GROUP, 4, bob.index, 1, 0, bytes(32))
    assert net.inject("bob", "erin", early) == Step()  # held, not refused
    current = gm.SenderKey(GROUP, 3, bob.index, 0, 0, bytes(32))
    assert net.inject("bob", "dave", current).refused is None  # dave is still at epoch 3
    net.run()
    assert net.parties["erin"].delivered() == [gr.Deliver(bob, early)]
    assert_agree(net, ["alice", "bob", "carol", "dave", "erin"], epoch=4)


def test_held_messages_of_a_skipped_epoch_are_dropped_when_a_later_roster_comes(net: Net) -> None:
    bob = entry(net, "bob")
    net.inject("bob", "dave", gm.Commit(GROUP, 4, bob.index, bytes(32)))
    roster5 = gm.Roster(GROUP, 5, net.creator.members, SFU, 1234, "pin-12345678")
    net.inject("alice", "dave", roster5)
    assert net.member("dave").dropped["stale_epoch"] == 1 and not net.parties["dave"].delivered()


def test_an_earlier_epochs_sender_key_is_delivered_while_only_joins_came_since(net: Net) -> None:
    """Two joins close together: a key for epoch 3 reaches dave after the roster of epoch 5.
    Its sender is the same member and nobody left since, so it still holds (the key layer
    ratchets it forward); the same key from before a leave does not."""
    net.invite("erin")  # epoch 4
    net.invite("frank")  # epoch 5
    bob = entry(net, "bob")
    late = gm.SenderKey(GROUP, 3, bob.index, 0, 0, bytes(32))
    assert net.inject("bob", "dave", late).effects == (gr.Deliver(bob, late),)
    assert net.inject("bob", "alice", late).effects == (gr.Deliver(bob, late),)  # creator too
    # a commit or reveal of an earlier epoch is never carried: its round is over
    assert net.inject("bob", "dave", gm.Commit(GROUP, 3, bob.index, bytes(32))).refused
    # erin was not a member at epoch 3: nobody sent her that key, and she does not take it
    assert net.inject("bob", "erin", late).refused == "stale_epoch"
    net.apply("alice", net.creator.remove(net.now, "carol"))  # epoch 6 drops someone
    net.run()
    assert net.inject("bob", "dave", late).refused == "stale_epoch"
    after = gm.SenderKey(GROUP, 6, bob.index, 1, 0, bytes(32))
    assert net.inject("bob", "dave", after).refused is None


def test_an_old_key_is_not_carried_over_an_epoch_this_member_never_saw(net: Net) -> None:
    bob = entry(net, "bob")
    roster5 = gm.Roster(GROUP, 5, net.creator.members, SFU, 1234, "pin-12345678")
    net.inject("alice", "dave", roster5)  # epoch 4's roster never came: what did it change?
    late = gm.SenderKey(GROUP, 3, bob.index, 0, 0, bytes(32))
    assert net.inject("bob", "dave", late).refused == "stale_epoch"


def test_an_old_key_is_not_carried_for_a_member_whose_entry_changed(net: Net) -> None:
    """A member that left and joined again is a new member (new index): its old keys are not."""
    old_carol = entry(net, "carol")
    net.apply("alice", net.creator.remove(net.now, "carol"))
    net.run()
    net.add_member("carol")  # her new phone state: the old one ended when she was removed
    net.invite("carol")
    assert entry(net, "carol").index != old_carol.index
    late = gm.SenderKey(GROUP, 3, entry(net, "carol").index, 0, 0, bytes(32))
    assert net.inject("carol", "dave", late).refused == "stale_epoch"


# ---- robustness ------------------------------------------------------------------------------


inputs = st.one_of(
    any_message,
    st.just(gm.Invite(GROUP, "alice", SFU, 1234, "pin-12345678")),
    st.just(gm.Decline(GROUP)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(NAMES[:5]), inputs, st.booleans(), st.booleans()), max_size=12
    )
)
def test_no_input_breaks_a_machine(events: list[tuple[str, Any, bool, bool]]) -> None:
    """Whatever arrives, in whatever order, is taken or counted; nothing raises."""
    net = make_net()
    net.invite("bob", "carol")
    for sender, message, to_creator, ours in events:
        msg = dataclasses.replace(message, group=GROUP) if ours else message
        step = net.inject(sender, "alice" if to_creator else "bob", msg)
        assert step.refused is None or step.effects == ()
    roster = net.creator.members
    assert roster[0].user == "alice" and [m.index for m in roster] == sorted(
        m.index for m in roster
    )
    assert net.member("bob").epoch <= net.creator.epoch  # forged rosters never took


def test_withdrawn_and_vanished_invites_close() -> None:
    net = make_net()
    net.add_member("bob", auto_accept=False)
    net.add_member("carol", auto_accept=False)
    net.invite("bob", "carol")
    net.apply("alice", net.creator.remove(net.now, "bob"))
    net.apply("alice", net.creator.member_gone(net.now, "carol"))
    net.run()
    effects = net.parties["alice"].effects
    assert gr.InviteClosed("bob", "withdrawn") in effects
    assert gr.InviteClosed("carol", "gone") in effects
    assert net.parties["bob"].ended() == gr.Ended(EndReason.ENDED)
    assert net.creator.invited == {} and net.creator.epoch == 0


def test_a_join_reusing_a_members_frame_key_is_dropped(net: Net) -> None:
    net.apply("alice", net.creator.invite(net.now, "erin"))
    step = net.inject("erin", "alice", gm.Join(GROUP, frame_key("bob")))
    assert step.refused == "duplicate_frame_key" and net.creator.epoch == 3


def test_losing_the_creator_ends_the_call_for_a_member(net: Net) -> None:
    step = net.apply("bob", net.member("bob").creator_gone(net.now))
    assert step.effects == (gr.Ended(EndReason.CREATOR_GONE),)
    assert net.inject("alice", "bob", current_roster(net)).refused == "ended"
