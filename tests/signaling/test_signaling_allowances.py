"""The router's per-user allowances (directory, TURN) and registrations, pure: a fake clock."""

from __future__ import annotations

import json

from signaling.router import Router
from tests.signaling.helpers import make_user
from tests.signaling.test_signaling_router import Clock, closes, frames, login, make_router, send


def lookup(name: str, msg_id: str = "q") -> str:
    return json.dumps({"v": 1, "type": "lookup", "id": msg_id, "user": name})


def answer(router: Router, sid: int, frame: str) -> str:
    """The type of the answer to ``frame`` (or its error code)."""
    got = [f for f in frames(router.receive(sid, frame), sid) if f["type"] != "deliver"]
    assert len(got) == 1
    return str(got[0]["type"] if got[0]["type"] != "error" else got[0]["code"])


def test_naming_someone_new_spends_the_directory_allowance_whatever_the_answer() -> None:
    clock = Clock()
    router = make_router(clock, lookup_burst=3, lookups_per_minute=60)
    a = login(router, "alice")
    b = login(router, "bob")
    assert answer(router, a, lookup("bob")) == "key"
    assert answer(router, a, lookup("nobody")) == "unknown_user"
    assert answer(router, a, send("carol")) == "unknown_user"
    # Spent: the same answer for an online user, an unknown name and a lookup.
    assert answer(router, a, send("bob")) == "rate_limited"
    assert answer(router, a, send("zed")) == "rate_limited"
    assert answer(router, a, lookup("bob")) == "rate_limited"
    assert answer(router, a, lookup("alice")) == "key"  # yourself: free
    assert answer(router, a, send("alice")) == "sent"
    clock.now += 1.0  # one token a second here
    assert answer(router, a, send("bob")) == "sent"
    # Delivered, but that gives alice nothing: else she could watch bob's presence for free.
    assert answer(router, a, send("bob")) == "rate_limited"
    assert answer(router, b, send("alice")) == "sent"  # bob answers (free for him)
    assert answer(router, a, lookup("bob")) == "key"  # a peer now: free, again and again
    assert answer(router, a, send("bob")) == "sent"


def test_peers_are_free_both_ways_and_follow_a_new_session() -> None:
    router = make_router(lookup_burst=1)
    a, b = login(router, "alice"), login(router, "bob")
    assert answer(router, a, send("bob")) == "sent"  # alice's one token
    assert answer(router, b, send("alice")) == "sent"  # alice delivered to bob: free for him
    assert answer(router, b, lookup("alice")) == "key"
    assert answer(router, b, lookup("carol")) == "unknown_user"  # bob's own token
    a2 = login(router, "alice")  # the newest session wins, and keeps its peers
    assert answer(router, a2, send("bob")) == "sent"
    assert answer(router, a2, lookup("dave")) == "rate_limited"


def test_the_directory_allowance_survives_reconnecting() -> None:
    router = make_router(lookup_burst=2)
    a = login(router, "alice")
    assert [answer(router, a, lookup(f"n{i}xx")) for i in range(3)] == [
        "unknown_user",
        "unknown_user",
        "rate_limited",
    ]
    router.disconnect(a)
    a = login(router, "alice")
    assert answer(router, a, lookup("n9xx")) == "rate_limited"


def test_the_message_bucket_survives_reconnecting() -> None:
    """Logging in again used to start a fresh bucket (40 messages at once each time): a user
    reconnecting in a loop sent at many times the rate."""
    clock = Clock()
    router = make_router(clock, rate=1, burst=5)
    a = login(router, "alice")  # the login frame spent one token
    assert [answer(router, a, send("alice")) for _ in range(5)] == ["sent"] * 4 + ["rate_limited"]
    router.disconnect(a)
    a = login(router, "alice")  # the bucket goes on from where the last session left it
    assert answer(router, a, send("alice")) == "rate_limited"
    router.disconnect(a)
    clock.now += 3.0  # refilled at the rate, as if the session had stayed
    a = login(router, "alice")
    assert [answer(router, a, send("alice")) for _ in range(4)] == ["sent"] * 3 + ["rate_limited"]


def test_a_login_while_the_last_session_is_still_closing_continues_its_bucket() -> None:
    """A session the server closes (here: it did not read its answers) leaves presence at
    once but its socket only later: a login in between used to find no bucket to continue."""
    clock = Clock()
    router = make_router(clock, rate=1, burst=30, max_queue=2)
    a = login(router, "alice")  # challenge and welcome never written: the queue is full
    sent = 0
    while not closes(router.receive(a, send("alice", str(sent)))):
        sent += 1
    again = login(router, "alice")  # before the closed socket is gone
    assert answer(router, again, send("alice")) != "rate_limited"  # some tokens were left
    level = router._sessions[again].bucket.level(clock.now)
    assert level <= 30 - (1 + sent + 1) + 1e-9  # not a fresh 30


def test_a_closed_session_s_socket_going_later_does_not_undo_what_a_newer_one_spent() -> None:
    clock = Clock()
    router = make_router(clock, rate=1, burst=30, max_queue=1000)
    first = login(router, "alice")
    router.fail(first)  # the server closes it; its socket is still there for a while
    second = login(router, "alice")
    for i in range(40):
        router.receive(second, send("alice", str(i)))
    router.disconnect(second)  # leaves the bucket empty
    router.disconnect(first)  # the closed one's socket goes only now: it must not refill it
    third = login(router, "alice")
    assert router._sessions[third].bucket.level(clock.now) < 1.0


def test_turn_credentials_per_user() -> None:
    clock = Clock()
    turn = {"turn_secret": "s", "turn_uris": ("turn:127.0.0.1:3478",)}
    router = make_router(clock, turn_burst=2, turn_per_minute=1, **turn)
    a = login(router, "alice")
    request = json.dumps({"v": 1, "type": "turn", "id": "t"})
    assert [answer(router, a, request) for _ in range(3)] == [
        "turn_credentials",
        "turn_credentials",
        "rate_limited",
    ]
    router.disconnect(a)
    a = login(router, "alice")
    assert answer(router, a, request) == "rate_limited"
    clock.now += 60.0
    assert answer(router, a, request) == "turn_credentials"
    assert answer(router, login(router, "bob"), request) == "turn_credentials"  # per user
    plain = make_router(turn_burst=1)
    b = login(plain, "bob")
    assert [answer(plain, b, request) for _ in range(2)] == ["turn_unavailable"] * 2  # free


def test_registrations_go_through_the_policy_and_are_counted() -> None:
    router = make_router(registration="invite")
    router.registry.add_invite("t" * 22, None, 1_700_000_100.0)
    sid, actions = router.connect("10.0.0.1")
    challenge = frames(actions)[0]
    refused = router.receive(sid, make_user("alice").login_frame(challenge))
    assert frames(refused)[0]["code"] == "registration_closed"
    assert closes(refused) == [(sid, 4001, "registration_closed")]
    assert not router.logged_in_session(sid)
    sid, actions = router.connect("10.0.0.1", invite="t" * 22)
    alice = make_user("alice", seed=5)
    welcome = router.receive(sid, alice.login_frame(frames(actions)[0]))
    assert frames(welcome) == [{"v": 1, "type": "welcome", "user": "alice"}]
    assert router.logged_in_session(sid)
    sid, actions = router.connect("10.0.0.1")  # an owner logs in again without a token
    again = router.receive(sid, alice.login_frame(frames(actions)[0]))
    assert frames(again, sid) == [{"v": 1, "type": "welcome", "user": "alice"}]
    assert router.stats.registrations == {"registration_closed": 1, "ok": 1}
