"""The router in cluster mode and the bus messages, pure: a fake clock, actions asserted."""

from __future__ import annotations

import pytest

from signaling.busmessages import (
    MAX_ENVELOPES,
    Acks,
    BusMessageError,
    Envelope,
    Envelopes,
    Kick,
    Kicked,
    SeenIds,
    encode,
    parse,
)
from signaling.config import Config
from signaling.handoff import Allowances, Claim, Forward, Outcome
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
    assert frames(router.receive(a, send("carol")))[0]["code"] == "unknown_user"  # no forward


def test_an_envelope_from_another_instance_is_delivered_here_or_refused() -> None:
    router = cluster_router(Clock(), max_queue=1)
    b = claim(router, "bob")
    actions, outcome = router.deliver_remote("alice", "bob", BODY)
    assert outcome is Outcome.OK
    assert frames(actions, b) == [{"v": 1, "type": "deliver", "from": "alice", "body": BODY}]
    assert router.deliver_remote("alice", "bob", BODY) == ([], Outcome.QUEUE_FULL)
    assert router.deliver_remote("alice", "nobody", BODY) == ([], Outcome.OFFLINE)


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


def test_allowances_and_bus_messages_round_trip_and_reject_garbage() -> None:
    a = Allowances(None, 2.5, 1.0, 1_700_000_000.0)
    assert Allowances.decode(a.encode()) == a
    for bad in (None, "", "[1,2]", '[1,"x",1,1]', "[1,NaN,1,1]", "{}"):
        assert Allowances.decode(bad) is None
    messages = [
        Envelope("i:1", "i", "bob", "alice", BODY),
        Acks((("i:1", Outcome.OK), ("i:2", Outcome.OFFLINE))),
        Kick("i:k3", "i", "bob", 7),
        Kicked("i:k3", None),
    ]
    for message in messages:
        assert parse(encode(message)) == message
    for bad in (
        b"",
        b"{}",
        b"[]",
        b'["env",1]',
        b'["acks",[["x","maybe"]]]',
        b'["kick","a","b","c",true]',
    ):
        with pytest.raises(BusMessageError):
            parse(bad)


def test_a_batch_of_envelopes_round_trips_and_a_bad_one_is_refused_whole() -> None:
    items = (Envelope("i:1", "i", "bob", "alice", BODY), Envelope("i:2", "i", "c", "a", ""))
    batch = Envelopes(items)
    assert parse(encode(batch)) == batch
    # What the route script publishes: the "env" messages joined, inside an "envs" one.
    joined = '["envs",[' + ",".join(encode(e) for e in batch.items) + "]]"
    assert parse(joined) == batch
    good = encode(batch.items[0])
    for bad in (
        '["envs"]',
        '["envs",{}]',
        f'["envs",[{good},["env","i:2","i","c","a"]]]',  # one field short
        f'["envs",[{good},["acks",[]]]]',
        f'["envs",[{good},["env","i:2","i","c","a",1]]]',
        '["envs",[' + ",".join([good] * (MAX_ENVELOPES + 1)) + "]]",
    ):
        with pytest.raises(BusMessageError):
            parse(bad)


def test_seen_ids_drop_repeats_within_a_bounded_window() -> None:
    seen = SeenIds(size=2)
    assert [seen.first(i) for i in ("a", "a", "b", "c", "a")] == [True, False, True, True, True]
    assert seen.duplicates == 1
