"""The router in cluster mode and the bus messages, pure: a fake clock, actions asserted."""

from __future__ import annotations

import pytest

from signaling.busmessages import (
    MAX_LINES,
    Batch,
    BusMessageError,
    Kick,
    Kicked,
    SeenIds,
    ack_lines,
    encode_kick,
    envelope_line,
    header,
    parse,
)
from signaling.config import Config
from signaling.handoff import Allowances, Claim, Forward, Outcome
from signaling.protocol import deliver_frame
from signaling.registry import MemoryRegistry
from signaling.router import Router
from tests.signaling.helpers import make_user
from tests.signaling.test_signaling_router import BODY, Clock, closes, frames, send


def cluster_router(clock: Clock, **changes: object) -> Router:
    return Router(
        Config(db="", **changes),  # type: ignore[arg-type]
        MemoryRegistry(),
        clock=clock,
        wall_clock=lambda: clock.now,
        random_bytes=lambda n: b"\x07" * n,
        cluster=True,
    )


def claim(router: Router, name: str, handed: Allowances | None = None) -> int:
    """Log in up to the claim, then finish it as the cluster would."""
    sid, actions = router.connect("10.0.0.1")
    router.written(sid)  # the challenge went out
    answer = router.receive(sid, make_user(name, seed=len(name)).login_frame(frames(actions)[0]))
    assert answer == [Claim(sid, name)] and not router.logged_in_session(sid)
    assert frames(router.claimed(sid, handed), sid) == [{"v": 1, "type": "welcome", "user": name}]
    router.written(sid)  # and the welcome
    return sid


def test_a_login_waits_for_its_claim_and_a_failed_claim_refuses_it_retryably() -> None:
    router = cluster_router(Clock())
    sid, actions = router.connect("10.0.0.1")
    login = make_user("alice", seed=5).login_frame(frames(actions)[0])
    assert router.receive(sid, login) == [Claim(sid, "alice")]
    assert frames(router.receive(sid, send("alice")), sid)[0]["code"] == "not_logged_in"
    refused = router.claim_failed(sid)
    assert frames(refused, sid)[-1]["code"] == "internal"  # clients retry "internal"
    assert closes(refused) == [(sid, 4011, "internal")]
    assert router.claimed(sid, None) == []  # too late: nothing


def test_a_user_elsewhere_is_forwarded_and_the_outcome_answers_the_sender() -> None:
    router = cluster_router(Clock())
    a = claim(router, "alice")
    router.registry.claim("bob", b"\x01" * 32)  # registered, on another instance
    assert router.receive(a, send("bob", "m1")) == [Forward(a, "m1", "bob", "alice", BODY)]
    assert frames(router.forwarded(a, "m1", "bob", Outcome.OK)) == [
        {"v": 1, "type": "sent", "id": "m1"}
    ]
    for outcome, code in [
        (Outcome.OFFLINE, "offline"),
        (Outcome.QUEUE_FULL, "queue_full"),
        (Outcome.UNREACHABLE, "offline"),
    ]:
        answer = frames(router.forwarded(a, "m2", "bob", outcome))
        assert [(f["type"], f["code"], f["id"]) for f in answer] == [("error", code, "m2")]
    # A name not here is forwarded unchecked; the registry is asked only if nobody held it.
    assert router.receive(a, send("carol", "m3")) == [Forward(a, "m3", "carol", "alice", BODY)]
    for outcome in (Outcome.OFFLINE, Outcome.UNREACHABLE):
        answer = frames(router.forwarded(a, "m3", "carol", outcome))
        assert [(f["code"], f["id"]) for f in answer] == [("unknown_user", "m3")]


def test_an_envelope_from_another_instance_is_delivered_here_or_refused() -> None:
    router = cluster_router(Clock(), max_queue=1)
    b = claim(router, "bob")
    frame = deliver_frame("alice", BODY)  # as the bus record makes it (busmessages.parse)
    actions, outcome = router.deliver_remote("alice", "bob", frame)
    assert outcome is Outcome.OK
    assert frames(actions, b) == [{"v": 1, "type": "deliver", "from": "alice", "body": BODY}]
    assert router.deliver_remote("alice", "bob", frame) == ([], Outcome.QUEUE_FULL)
    assert router.deliver_remote("alice", "nobody", frame) == ([], Outcome.OFFLINE)


def test_a_kick_closes_the_session_and_hands_its_token_levels_over() -> None:
    clock = Clock()
    router = cluster_router(clock, rate=1.0, burst=5)
    b = claim(router, "bob")  # the login frame spent one token
    for _ in range(3):
        router.receive(b, send("bob"))
    actions, handed = router.kick("bob", b)
    assert closes(actions) == [(b, 4003, "replaced")]
    assert handed is not None and handed.messages == pytest.approx(1.0)
    assert router.kick("bob", b) == ([], None)  # once

    other = cluster_router(clock, rate=1.0, burst=5)  # the instance bob logs in to next
    clock.now += 1.0  # refilled by one token meanwhile
    b2 = claim(other, "bob", handed)  # its login frame spent one of a fresh bucket's five...
    answers = [frames(other.receive(b2, send("bob", str(i))), b2)[-1] for i in range(4)]
    # ...but the handed-over level (1 + 1 refilled) replaced it: two more, then refused.
    assert [a["type"] for a in answers] == ["sent", "sent", "error", "error"]


def test_allowances_and_kick_messages_round_trip_and_reject_garbage() -> None:
    a = Allowances(None, 2.5, 1.0, 1_700_000_000.0)
    assert Allowances.decode(a.encode()) == a
    for bad in (None, "", "[1,2]", '[1,"x",1,1]', "[1,NaN,1,1]", "{}"):
        assert Allowances.decode(bad) is None
    for message in (Kick("i:k3", "i", "bob", 7), Kicked("i:k3", None), Kicked("i:k4", "[]")):
        assert parse(encode_kick(message)) == message
    for bad in (b"", b"{}", b"[]", b'["env",1]', b'["kick","a","b","c",true]', b"\xff"):
        with pytest.raises(BusMessageError):
            parse(bad)


def test_a_batch_carries_envelopes_and_acknowledgements_as_ranges() -> None:
    frame = deliver_frame("alice", BODY)
    lines = [envelope_line(7, "bob", "alice", BODY), envelope_line(9, "carol", "alice", BODY)]
    # What the flush script publishes: the header, the envelope lines, acknowledgement lines.
    acks = ack_lines([1, 2, 3, 5, 8, 9], [(4, Outcome.OFFLINE), (6, Outcome.QUEUE_FULL)])
    assert acks.split("\n") == ["a1-3", "a5", "a8-9", "x4 offline", "x6 queue_full"]
    message = "\n".join([header("i"), *lines, acks])
    assert parse(message) == Batch(
        "i",
        [(7, "bob", "alice", frame), (9, "carol", "alice", frame)],
        [(1, 3), (5, 5), (8, 9)],
        [(4, Outcome.OFFLINE), (6, Outcome.QUEUE_FULL)],
    )
    assert ack_lines([], []) == ""
    assert ack_lines([4, 2], []) == "a4\na2"  # out of order still says each id once


def test_a_malformed_batch_is_refused_whole() -> None:
    good = envelope_line(1, "bob", "alice", BODY)
    for bad in (
        "v1 i\n" + good,  # another version of the bus protocol
        "v2\n" + good,  # no origin
        "v2 i\n" + good + "\n",  # an empty line
        "v2 i\n" + good + "\ne2 bob alice",  # fields missing
        "v2 i\n" + good + '\ne2 bob alice {"v":1,"type":"sent","id":"x"}',  # not a body
        "v2 i\ne-1 bob alice " + BODY,  # not an id
        "v2 i\na5-3",  # an empty range
        "v2 i\nax",
        "v2 i\nx4 ok",  # an acknowledgement that says delivered is an "a" line
        "v2 i\nx4 maybe",
        "v2 i\nz1",
        "v2 i\n" + "\n".join([good] * (MAX_LINES + 1)),
    ):
        with pytest.raises(BusMessageError):
            parse(bad)


def test_seen_ids_drop_an_id_not_above_the_last_of_its_origin() -> None:
    seen = SeenIds(origins=2)
    taken = [seen.first(o, n) for o, n in (("a", 1), ("a", 1), ("a", 3), ("a", 2), ("b", 1))]
    assert taken == [True, False, True, False, True]
    assert seen.duplicates == 2
    seen.heard("a")  # "a" is still sending: "b" is forgotten first
    assert seen.first("c", 5)
    assert not seen.first("a", 3)  # "a" still remembered
    assert seen.first("b", 1)  # "b" forgotten: its replay gets through here (the clients
    assert seen.duplicates == 3  # replay guards drop it)
