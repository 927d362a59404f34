"""The call log on home comes from real calls: each side records what it saw, once per call."""

from __future__ import annotations

import time
from pathlib import Path

from signaling.server import SignalingServer
from tests.integration.conftest import WAIT, MakePhone, MakeUser, url_of, wait_until
from tests.integration.test_call_outcomes import connected_pair
from voice.call.events import EndReason
from voice.phone.history import CallLog


def logs(tmp_path: Path, server: SignalingServer, *users: str) -> dict[str, CallLog]:
    return {u: CallLog(tmp_path / f"{u}.calls.json", server=url_of(server)) for u in users}


async def test_an_answered_call_is_logged_both_ways_with_its_length(
    make_user: MakeUser, make_phone: MakePhone, server: SignalingServer, tmp_path: Path
) -> None:
    log = logs(tmp_path, server, "alice", "bob")
    before = time.time()
    pa = await make_phone(make_user("alice"), call_log=log["alice"])
    pb = await make_phone(make_user("bob"), call_log=log["bob"])
    out, inc = await connected_pair(pa, pb)
    await wait_until(lambda: out.media_stats() is not None)
    await out.hangup()
    await out.wait_ended(WAIT)
    await inc.wait_ended(WAIT)
    await wait_until(lambda: bool(log["bob"].recent()) and bool(log["alice"].recent()))
    (mine,), (theirs,) = log["alice"].recent(), log["bob"].recent()
    assert (mine.peer, mine.direction, mine.result) == ("bob", "out", "answered")
    assert (theirs.peer, theirs.direction, theirs.result) == ("alice", "in", "answered")
    for record in (mine, theirs):
        assert record.seconds is not None and 0 < record.seconds < WAIT
        assert before - 1 <= record.at <= time.time()
    assert (log["alice"].path.stat().st_mode & 0o777) == 0o600


async def test_unanswered_calls_are_missed_for_the_callee_and_say_why_for_the_caller(
    make_user: MakeUser, make_phone: MakePhone, server: SignalingServer, tmp_path: Path
) -> None:
    log = logs(tmp_path, server, "alice", "bob", "carol", "dave")
    pa = await make_phone(make_user("alice"), call_log=log["alice"])
    pb = await make_phone(make_user("bob"), call_log=log["bob"])
    pc = await make_phone(make_user("carol"), call_log=log["carol"])
    pd = await make_phone(make_user("dave"), call_log=log["dave"])

    out = await pa.call("bob")  # alice gives up while it rings: bob missed it
    inc = await pb.incoming(timeout=WAIT)
    await out.hangup()
    assert (await inc.wait_ended(WAIT)).reason is EndReason.CANCELLED_REMOTE
    out = await pa.call("bob")  # bob declines
    inc = await pb.incoming(timeout=WAIT)
    await inc.decline()
    await out.wait_ended(WAIT)
    out = await pc.call("bob")  # carol's first call, declined: now bob knows her key
    await (await pb.incoming(timeout=WAIT)).decline()
    await out.wait_ended(WAIT)
    busy_out, busy_in = await connected_pair(pa, pb)  # carol and dave call during a call
    for phone in (pc, pd):
        third = await phone.call("bob")
        assert (await third.wait_ended(WAIT)).reason is EndReason.BUSY
    await busy_out.hangup()
    await busy_in.wait_ended(WAIT)
    await wait_until(lambda: len(log["bob"].recent()) == 5 and len(log["alice"].recent()) == 3)
    await wait_until(lambda: len(log["carol"].recent()) == 2 and len(log["dave"].recent()) == 1)

    def shown(name: str) -> list[tuple[str, str, str]]:
        return [(r.peer, r.direction, r.result) for r in reversed(log[name].recent())]

    assert shown("alice") == [("bob", "out", "cancelled"), ("bob", "out", "declined"),
                              ("bob", "out", "answered")]  # fmt: skip
    # carol, a contact, is a missed call while bob talked; dave, a stranger, leaves no trace
    # (anyone can send offers during a call: they must not flood the log)
    assert shown("bob") == [("alice", "in", "missed"), ("alice", "in", "declined"),
                            ("carol", "in", "declined"), ("carol", "in", "missed"),
                            ("alice", "in", "answered")]  # fmt: skip
    assert shown("carol") == [("bob", "out", "declined"), ("bob", "out", "busy")]
    assert shown("dave") == [("bob", "out", "busy")]
    assert [r.missed for r in log["bob"].recent()] == [False, True, False, False, True]
