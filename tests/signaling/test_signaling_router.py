"""The router core, pure: a fake clock, pinned randomness, actions asserted one by one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from signaling.config import Config
from signaling.registry import MemoryRegistry
from signaling.router import ANSWER_ROOM, Action, Disconnect, Router, Transmit
from tests.signaling.helpers import make_user

BODY = base64.b64encode(b"opaque").decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_router(clock: Clock | None = None, **changes: Any) -> Router:
    config = Config(db="", **changes)
    return Router(
        config,
        MemoryRegistry(),
        clock=clock or Clock(),
        wall_clock=lambda: 1_700_000_000.0,
        random_bytes=lambda n: b"\x07" * n,
    )


def frames(actions: list[Action], sid: int | None = None) -> list[dict[str, Any]]:
    return [
        json.loads(a.frame)
        for a in actions
        if isinstance(a, Transmit) and (sid is None or a.session == sid)
    ]


def closes(actions: list[Action]) -> list[tuple[int, int, str]]:
    return [(a.session, a.code, a.reason) for a in actions if isinstance(a, Disconnect)]


def assert_error_before_every_close(actions: list[Action]) -> None:
    for i, action in enumerate(actions):
        if isinstance(action, Disconnect):
            before = [a for a in actions[:i] if a.session == action.session]
            assert isinstance(before[-1], Transmit)
            last = json.loads(before[-1].frame)
            assert last["type"] == "error" and last["code"] == action.reason


def login(router: Router, name: str, ip: str = "10.0.0.1") -> int:
    sid, actions = router.connect(ip)
    challenge = frames(actions)[0]
    assert challenge == {
        "v": 1,
        "type": "challenge",
        "server": "voice-signaling",
        "server_id": "07" * 16,  # a Router without an identity makes one from random_bytes
        "nonce": base64.b64encode(b"\x07" * 32).decode(),
    }
    answer = router.receive(sid, make_user(name, seed=len(name)).login_frame(challenge))
    assert frames(answer, sid) == [{"v": 1, "type": "welcome", "user": name}]
    return sid


def send(to: str, msg_id: str = "1", body: str = BODY) -> str:
    return json.dumps({"v": 1, "type": "send", "id": msg_id, "to": to, "body": body})


def test_route_adds_the_authenticated_sender() -> None:
    router = make_router()
    a, b = login(router, "alice"), login(router, "bob")
    actions = router.receive(a, send("bob"))
    assert frames(actions, b) == [{"v": 1, "type": "deliver", "from": "alice", "body": BODY}]
    assert frames(actions, a) == [{"v": 1, "type": "sent", "id": "1"}]
    assert router.stats.envelopes_routed == 1


def test_offline_and_unknown_recipients() -> None:
    router = make_router()
    a, b = login(router, "alice"), login(router, "bob")
    router.disconnect(b)
    assert frames(router.receive(a, send("bob")))[0]["code"] == "offline"
    assert frames(router.receive(a, send("carol")))[0]["code"] == "unknown_user"


def test_newest_session_wins_and_the_old_one_is_told() -> None:
    router = make_router()
    old = login(router, "alice")
    sid, actions = router.connect("10.0.0.2")
    user = make_user("alice", seed=5)
    actions = router.receive(sid, user.login_frame(frames(actions)[0]))
    assert closes(actions) == [(old, 4003, "replaced")]
    assert_error_before_every_close(actions)
    assert frames(actions, sid)[-1]["type"] == "welcome"
    b = login(router, "bob")
    assert closes(router.receive(b, send("alice"))) == []
    assert router.presence.lookup("alice") == sid
    router.disconnect(old)  # the old socket going away must not log the new one out
    assert router.presence.lookup("alice") == sid


def test_login_deadline_uses_the_injected_clock() -> None:
    clock = Clock()
    router = make_router(clock, login_timeout=10)
    sid, _ = router.connect("10.0.0.1")
    clock.now += 9.5
    actions, again = router.check_deadline(sid)
    assert actions == [] and again == 0.5
    clock.now += 0.5
    actions, again = router.check_deadline(sid)
    assert closes(actions) == [(sid, 4002, "login_timeout")] and again is None
    assert_error_before_every_close(actions)
    assert router.receive(sid, "{}") == []  # a closing session is ignored


def test_rate_limit_is_a_token_bucket_per_user_that_survives_relogin() -> None:
    clock = Clock()
    router = make_router(clock, rate=2, burst=3)
    a, _ = login(router, "alice"), login(router, "bob")
    codes = [frames(router.receive(a, send("bob", str(i))), a)[0] for i in range(5)]
    assert [f["type"] for f in codes] == ["sent", "sent", "error", "error", "error"]
    assert codes[2] == {
        "v": 1,
        "type": "error",
        "code": "rate_limited",
        "id": "2",
        "message": codes[2]["message"],
    }
    sid = login(router, "alice")  # logging in again hands over the empty bucket
    assert frames(router.receive(sid, send("bob", "x")), sid)[0]["code"] == "rate_limited"
    clock.now += 0.5  # one token back at 2 per second
    assert frames(router.receive(sid, send("bob", "y")), sid)[0]["type"] == "sent"
    assert frames(router.receive(sid, send("bob", "z")), sid)[0]["code"] == "rate_limited"


def test_malformed_frames_spend_tokens_too() -> None:
    """As documented: every frame spends a token, so garbage cannot be sent for free."""
    clock = Clock()
    router = make_router(clock, rate=1, burst=4)
    a, _ = login(router, "alice"), login(router, "bob")  # the login took one token
    for _ in range(3):
        assert frames(router.receive(a, "not json"), a)[0]["code"] == "bad_json"
    limited = frames(router.receive(a, send("bob", "after")), a)[0]
    assert (limited["code"], limited["id"]) == ("rate_limited", "after")
    clock.now += 1.0
    assert frames(router.receive(a, send("bob", "later")), a)[0]["type"] == "sent"


def test_a_full_recipient_queue_drops_the_envelope_but_never_closes_the_recipient() -> None:
    """Closing a recipient whose queue is full let any user disconnect any other user (and end
    their calls) with one burst of envelopes; the sender is told instead, the recipient stays."""
    router = make_router(max_queue=3, rate=1000, burst=1000)
    a, b = login(router, "alice"), login(router, "bob")
    for sid in (a, b):
        for _ in range(2):  # challenge and welcome were written
            router.written(sid)
    sent = []
    for i in range(5):
        sent.append(router.receive(a, send("bob", str(i))))
        for action in sent[-1]:
            if action.session == a:
                router.written(a)  # alice keeps reading; bob does not, for now
    assert [frames(x, a)[0]["type"] for x in sent[:3]] == ["sent"] * 3
    for i in (3, 4):
        assert frames(sent[i], a)[0]["code"] == "queue_full"
        assert frames(sent[i], a)[0]["id"] == str(i)
        assert frames(sent[i], b) == [] and closes(sent[i]) == []
    assert router.presence.lookup("bob") == b
    for _ in range(3):
        router.written(b)  # bob catches up: envelopes flow again
    again = router.receive(a, send("bob", "later"))
    assert frames(again, b)[0]["type"] == "deliver"
    assert frames(again, a)[0] == {"v": 1, "type": "sent", "id": "later"}


def test_a_connection_that_does_not_read_its_own_answers_is_closed() -> None:
    router = make_router(max_queue=3, rate=1000, burst=1000)
    a = login(router, "alice")  # challenge and welcome never written: 2 pending
    answered = 0
    while True:  # each send to herself is answered (sent, then queue_full), never written
        actions = router.receive(a, send("alice", str(answered), BODY))
        if closes(actions):
            break
        answered += 1
    assert closes(actions) == [(a, 4005, "queue_full")]
    assert_error_before_every_close(actions)
    assert router.presence.lookup("alice") is None
    assert 2 + 1 + answered == 3 + ANSWER_ROOM  # her own answers had room past max_queue


def test_envelopes_that_fill_a_slow_reader_s_queue_never_get_it_closed() -> None:
    """Mallory fills bob's queue while bob's link stalls; bob's next request is answered into
    the room kept for his own answers, so mallory cannot end bob's session (she could: any
    user could disconnect any other), and the envelopes past the bound are dropped."""
    router = make_router(max_queue=4, rate=1000, burst=1000)
    m, b, c = login(router, "mallory"), login(router, "bob"), login(router, "carol")
    for sid in (m, b, c):
        for _ in range(2):
            router.written(sid)
    for i in range(10):
        for action in router.receive(m, send("bob", str(i))):
            if action.session == m:
                router.written(m)
    assert router._sessions[b].pending == 4  # full of mallory's envelopes
    for i in range(ANSWER_ROOM - 1):  # bob goes on calling carol, his link still stalled
        placed = router.receive(b, send("carol", f"offer{i}"))
        assert frames(placed, b) == [{"v": 1, "type": "sent", "id": f"offer{i}"}]
        assert closes(placed) == []
        router.written(c)
    assert router.presence.lookup("bob") == b


def test_connection_limits_per_ip_and_in_total() -> None:
    router = make_router(max_connections_per_ip=2, max_connections=3)
    first = [router.connect("10.0.0.1")[0] for _ in range(2)]
    sid, actions = router.connect("10.0.0.1")
    assert closes(actions) == [(sid, 4004, "too_many_connections")]
    assert_error_before_every_close(actions)
    assert [f["type"] for f in frames(actions)] == ["error"]  # no challenge
    router.connect("10.0.0.2")
    _, actions = router.connect("10.0.0.3")
    assert closes(actions)[0][1:] == (4004, "too_many_connections")
    router.disconnect(sid)  # refused ones do not count
    router.disconnect(first[0])
    _, actions = router.connect("10.0.0.1")
    assert frames(actions)[0]["type"] == "challenge"
    assert router.connections == 3


def test_the_per_ip_limit_counts_an_ipv6_slash_64_as_one_address() -> None:
    """One IPv6 host routinely owns a whole /64: counting each address alone let it open
    2**64 times the per-IP limit. An IPv4-mapped address counts as its IPv4 address."""
    router = make_router(max_connections_per_ip=2)
    for ip in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"):
        assert frames(router.connect(ip)[1])[0]["type"] == "challenge"
    sid, actions = router.connect("2001:db8:1:2:abcd::1")
    assert closes(actions) == [(sid, 4004, "too_many_connections")]
    assert frames(router.connect("2001:db8:1:3::1")[1])[0]["type"] == "challenge"  # next /64
    router.connect("10.0.0.7")
    router.connect("::ffff:10.0.0.7")
    sid, actions = router.connect("10.0.0.7")
    assert closes(actions) == [(sid, 4004, "too_many_connections")]
    assert frames(router.connect("?")[1])[0]["type"] == "challenge"  # unknown: kept as is


def test_login_failures_close_and_consume_the_challenge() -> None:
    router = make_router()
    sid, actions = router.connect("10.0.0.1")
    challenge = frames(actions)[0]
    mallory = make_user("alice", seed=9)
    bad = json.loads(mallory.login_frame(challenge))
    bad["sig"] = base64.b64encode(b"\x00" * 64).decode()
    actions = router.receive(sid, json.dumps(bad))
    assert closes(actions) == [(sid, 4001, "bad_signature")]
    assert_error_before_every_close(actions)
    assert router.receive(sid, mallory.login_frame(challenge)) == []
    assert router.stats.logins["refused"] == 1


def test_not_logged_in_and_already_logged_in() -> None:
    router = make_router()
    sid, _ = router.connect("10.0.0.1")
    answer = frames(router.receive(sid, send("bob", "5")))[0]
    assert (answer["code"], answer["id"]) == ("not_logged_in", "5")
    a = login(router, "alice")
    challenge = {"server": "voice-signaling", "server_id": "07" * 16, "nonce": BODY}
    again = make_user("alice", seed=5).login_frame(challenge)
    actions = router.receive(a, again)
    assert frames(actions)[0]["code"] == "already_logged_in" and closes(actions) == []


def test_turn_credentials_follow_the_coturn_rest_format() -> None:
    router = make_router(turn_secret="s3cret", turn_uris=("turn:127.0.0.1:3478",), turn_ttl=600)
    a = login(router, "alice")
    creds = frames(router.receive(a, json.dumps({"v": 1, "type": "turn", "id": "t"})))[0]
    label = hmac.new(b"s3cret", b"turn-user\0alice", hashlib.sha256).hexdigest()[:24]
    assert creds["username"] == f"1700000600:{label}"  # sent in clear over STUN: no name
    assert "alice" not in creds["username"]
    digest = hmac.new(b"s3cret", creds["username"].encode(), hashlib.sha1).digest()
    assert creds["password"] == base64.b64encode(digest).decode()
    b = login(router, "bob")
    other = frames(router.receive(b, json.dumps({"v": 1, "type": "turn", "id": "u"})))[0]
    assert other["username"].split(":")[1] != label  # one pseudonym per user
    assert (creds["ttl"], creds["uris"], creds["id"]) == (600, ["turn:127.0.0.1:3478"], "t")


def test_turn_unavailable_without_configuration() -> None:
    router = make_router()
    a = login(router, "alice")
    answer = frames(router.receive(a, json.dumps({"v": 1, "type": "turn", "id": "t"})))[0]
    assert (answer["code"], answer["id"]) == ("turn_unavailable", "t")


def test_every_frame_gets_exactly_one_answer() -> None:
    router = make_router()
    a, _ = login(router, "alice"), login(router, "bob")
    inputs: list[str | bytes] = ["", "{}", "[]", send("bob"), send("nobody"), b"\x00"]
    for data in [*inputs, send("bob", body="!")]:
        assert len(frames(router.receive(a, data), a)) == 1
