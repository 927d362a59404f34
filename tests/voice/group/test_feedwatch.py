"""Which feeds a member receives, from publisher lists and the frames they carried (pure).

A feed's display name is only a claim: anyone in the room can publish under a member's name.
These tests play that impostor: decoys that carry another member's frames, decoys that carry
nothing, more decoys than slots, and copies of the real member's frames."""

from __future__ import annotations

from voice.group.media import BENCH_S, MAX_CANDIDATES, TRIAL_PAYLOADS, FeedWatch, Look


def test_one_feed_per_member_is_received_once_and_vanished_members_are_found() -> None:
    watch = FeedWatch(publish_s=5.0)
    assert watch.look([("bob", 7)], {"bob", "carol"}, now=0.0) == Look([("bob", 7)], [], [])
    assert watch.look([("bob", 7)], {"bob", "carol"}, now=1.0) == Look([], [], [])
    assert watch.look([], {"bob", "carol"}, now=2.0) == Look([], [7], ["bob"])  # feed went away
    assert watch.look([], {"carol"}, now=5.5) == Look([], [], ["carol"])  # never published in 5 s


def test_a_decoy_under_a_members_name_is_received_too_until_the_real_feed_proves_itself() -> None:
    watch = FeedWatch()
    look = watch.look([("bob", 7), ("bob", 9)], {"bob", "mallory"}, now=0.0)
    assert sorted(look.subscribe) == [("bob", 7), ("bob", 9)]  # either may be bob's
    watch.heard(9, None)  # the decoy: nothing that verifies as bob's
    watch.heard(7, "bob")  # bob's signed frame: feed 7 is bob's
    look = watch.look([("bob", 7), ("bob", 9)], {"bob", "mallory"}, now=0.5)
    assert look == Look([], [9], []) and watch.feeds_of("bob") == [7]


def test_a_feed_that_carried_another_members_frames_is_dropped_for_good() -> None:
    watch = FeedWatch()
    watch.look([("bob", 9)], {"bob", "mallory"}, now=0.0)
    watch.heard(9, "mallory")  # mallory's own frames, published under bob's name
    assert watch.look([("bob", 9)], {"bob", "mallory"}, now=0.5).unsubscribe == [9]
    look = watch.look([("bob", 9), ("bob", 7)], {"bob", "mallory"}, now=1.0)
    assert look.subscribe == [("bob", 7)]  # the false one is never received again


def test_copies_of_the_members_frames_on_a_decoy_cannot_displace_the_first_proven_feed() -> None:
    """A decoy that relays bob's real frames proves "bob" too, but the first proven feed
    stays; and while both are received the SFrame replay window refuses the second copy."""
    watch = FeedWatch()
    watch.look([("bob", 7), ("bob", 9)], {"bob"}, now=0.0)
    watch.heard(7, "bob")
    watch.heard(9, "bob")
    assert watch.look([("bob", 7), ("bob", 9)], {"bob"}, now=0.5).unsubscribe == [9]
    assert watch.feeds_of("bob") == [7]


def test_more_decoys_than_slots_take_turns_so_the_real_feed_is_received() -> None:
    decoys = [("bob", 100 + n) for n in range(MAX_CANDIDATES + 2)]
    real = ("bob", 7)
    listed = [*decoys, real]  # the real feed listed last: every slot starts with a decoy
    watch = FeedWatch()
    now = 0.0
    for _ in range(20):
        watch.look(listed, {"bob"}, now)
        assert len(watch.feeds_of("bob")) <= MAX_CANDIDATES
        if 7 in watch.feeds_of("bob"):
            break
        for feed in watch.feeds_of("bob"):  # a turn's worth of payloads, none of them bob's
            for _ in range(TRIAL_PAYLOADS):
                watch.heard(feed, None)
        now += 1.0
    else:
        raise AssertionError("the real feed never got a turn")
    assert now < BENCH_S  # and soon
    watch.heard(7, "bob")
    look = watch.look(listed, {"bob"}, now + 0.5)
    assert watch.feeds_of("bob") == [7] and 7 not in look.unsubscribe


def test_a_member_who_leaves_is_no_longer_received() -> None:
    watch = FeedWatch()
    watch.look([("bob", 7), ("carol", 8)], {"bob", "carol"}, now=0.0)
    look = watch.look([("bob", 7), ("carol", 8)], {"carol"}, now=1.0)
    assert look == Look([], [7], []) and watch.feeds_of("bob") == []
