"""Which feeds a member receives, from publisher lists and the frames they carried (pure).

A feed's display name is only a claim: anyone in the room can publish under a member's name.
These tests play that impostor: decoys that carry another member's frames, decoys that carry
nothing, more decoys than slots, and decoys that relay copies of the real member's frames."""

from __future__ import annotations

import itertools

from voice.group.media import BENCH_S, MAX_CANDIDATES, TRIAL_S, FeedWatch, Look


def test_one_feed_per_member_is_received_once_and_vanished_members_are_found() -> None:
    watch = FeedWatch(publish_s=5.0)
    assert watch.look([("bob", 7)], {"bob", "carol"}, now=0.0) == Look([("bob", 7)], [], [])
    assert watch.look([("bob", 7)], {"bob", "carol"}, now=1.0) == Look([], [], [])
    assert watch.look([], {"bob", "carol"}, now=2.0) == Look([], [7], ["bob"])  # feed went away
    assert watch.look([], {"carol"}, now=5.5) == Look([], [], ["carol"])  # never published in 5 s


def test_every_feed_under_a_members_name_is_received_and_the_proven_one_kept() -> None:
    watch = FeedWatch()
    look = watch.look([("bob", 7), ("bob", 9)], {"bob", "mallory"}, now=0.0)
    assert sorted(look.subscribe) == [("bob", 7), ("bob", 9)]  # either may be bob's
    watch.heard(9, None)  # the decoy: nothing that verifies as bob's
    watch.heard(7, "bob")  # bob's signed frame: feed 7 is bob's
    for t in range(1, 60):  # whatever happens to the decoy, feed 7 stays
        watch.look([("bob", 7), ("bob", 9)], {"bob", "mallory"}, now=float(t))
        assert 7 in watch.feeds_of("bob")


def test_a_feed_that_carried_another_members_frames_is_dropped_for_good() -> None:
    watch = FeedWatch()
    watch.look([("bob", 9)], {"bob", "mallory"}, now=0.0)
    watch.heard(9, "mallory")  # mallory's own frames, published under bob's name
    assert watch.look([("bob", 9)], {"bob", "mallory"}, now=0.5).unsubscribe == [9]
    look = watch.look([("bob", 9), ("bob", 7)], {"bob", "mallory"}, now=1.0)
    assert look.subscribe == [("bob", 7)]  # the false one is never received again


def until_received(watch: FeedWatch, listed: list[tuple[str, int]], feed: int) -> float:
    """Look every 0.5 s (as the session does) until ``feed`` is received; when it was."""
    now = 0.0
    while now < 120.0:
        watch.look(listed, {"bob"}, now)
        assert len(watch.feeds_of("bob")) <= MAX_CANDIDATES
        if feed in watch.feeds_of("bob"):
            return now
        now += 0.5
    raise AssertionError(f"feed {feed} never got a turn")


def test_silent_decoys_cannot_keep_the_real_feed_out() -> None:
    """More decoys than slots, listed before bob's real feed, none sending a thing: turns go
    by time, so the real feed is received within a few trials."""
    decoys = [("bob", 100 + n) for n in range(MAX_CANDIDATES + 2)]
    when = until_received(FeedWatch(), [*decoys, ("bob", 7)], 7)
    assert when <= 2 * TRIAL_S + 1.0 < BENCH_S


def test_decoys_proven_by_copies_cannot_keep_the_real_feed_out() -> None:
    """Four decoys relay copies of bob's frames (each proves "bob") before bob's real feed is
    listed: one slot keeps turning, so the real feed is still received."""
    watch = FeedWatch()
    decoys = [("bob", 100 + n) for n in range(MAX_CANDIDATES)]
    watch.look(decoys, {"bob"}, 0.0)
    for _, feed in decoys:
        watch.heard(feed, "bob")
    when = until_received(watch, [*decoys, ("bob", 7)], 7)
    assert when <= TRIAL_S + 1.0


def test_a_decoy_that_keeps_wasting_its_turns_waits_longer_each_time() -> None:
    watch = FeedWatch()
    listed = [("bob", 100 + n) for n in range(MAX_CANDIDATES + 1)]
    received: dict[int, list[float]] = {}
    now = 0.0
    while now < 200.0:
        look = watch.look(listed, {"bob"}, now)
        for _, feed in look.subscribe:
            received.setdefault(feed, []).append(now)
        now += 0.5
    turns = received[100]
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    assert gaps == sorted(gaps) and gaps[-1] > 4 * gaps[0]  # fewer and fewer turns


def test_a_member_who_leaves_is_no_longer_received() -> None:
    watch = FeedWatch()
    watch.look([("bob", 7), ("carol", 8)], {"bob", "carol"}, now=0.0)
    look = watch.look([("bob", 7), ("carol", 8)], {"carol"}, now=1.0)
    assert look == Look([], [7], []) and watch.feeds_of("bob") == []
