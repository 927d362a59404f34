"""The call log: how a call's end becomes a record, and the private file that keeps them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from voice.call.events import EndReason, FailReason, Outcome
from voice.errors import InsecureKeyFile
from voice.phone.history import CallLog, CallRecord, parse_log, record_for

SERVER = "wss://voice.example.org:8765"


def ended(
    reason: EndReason | FailReason, *, incoming: bool, connected: float | None = None
) -> CallRecord:
    return record_for(server=SERVER, peer="bob", incoming=incoming, outcome=Outcome(reason),
                      began_at=1000.0, connected_for=connected)  # fmt: skip


@pytest.mark.parametrize(
    ("reason", "incoming", "result"),
    [
        (EndReason.CANCELLED_REMOTE, True, "missed"),  # the caller gave up while it rang
        (EndReason.NO_ANSWER, True, "missed"),
        (FailReason.SIGNALING_LOST, True, "missed"),  # our link went down while it rang
        (EndReason.DECLINED_LOCAL, True, "declined"),
        (FailReason.KEY_CHANGED, True, "failed"),
        (EndReason.DECLINED_REMOTE, False, "declined"),
        (EndReason.BUSY, False, "busy"),
        (EndReason.NO_ANSWER, False, "no answer"),
        (EndReason.CANCELLED_LOCAL, False, "cancelled"),
        (FailReason.UNREACHABLE, False, "failed"),
        (FailReason.ICE_FAILED, False, "failed"),
    ],
)
def test_a_call_that_never_connected_says_why(
    reason: EndReason | FailReason, incoming: bool, result: str
) -> None:
    record = ended(reason, incoming=incoming)
    assert (record.result, record.direction, record.seconds) == (
        result, "in" if incoming else "out", None)  # fmt: skip
    assert record.missed == (result == "missed")


@pytest.mark.parametrize("reason", [EndReason.HANGUP_REMOTE, FailReason.MEDIA_LOST])
def test_a_call_that_connected_is_answered_with_its_length_however_it_ended(
    reason: EndReason | FailReason,
) -> None:
    record = ended(reason, incoming=True, connected=83.5)
    assert (record.result, record.seconds, record.missed) == ("answered", 83.5, False)


def test_the_log_is_private_keeps_the_newest_and_shows_one_server(tmp_path: Path) -> None:
    path = tmp_path / "calls.json"
    log = CallLog(path, server=SERVER, keep=5)
    other = CallLog(path, server="wss://other.example:8765", keep=5)
    for i in range(6):
        log.add(CallRecord(SERVER, f"u{i}", "out", 1000.0 + i, "answered", float(i)))
    other.add(CallRecord(other.server, "eve", "in", 2000.0, "missed"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [r.peer for r in log.recent()] == ["u5", "u4", "u3", "u2"]  # u0, u1: beyond keep
    assert [r.peer for r in log.recent(limit=2)] == ["u5", "u4"]
    assert [r.peer for r in other.recent()] == ["eve"]
    assert CallLog(path, server=SERVER).recent()[0] == CallRecord(
        SERVER, "u5", "out", 1005.0, "answered", 5.0)  # fmt: skip


def test_a_missing_or_unreadable_log_is_empty_and_replaced_by_the_next_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "calls.json"
    log = CallLog(path, server=SERVER)
    assert log.recent() == []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    assert log.recent() == []
    assert "not a readable call log" in caplog.text
    for _ in range(5):  # home looks twice a second: one warning, not one per look
        assert log.recent() == []
    assert caplog.text.count("not a readable call log") == 1
    log.add(CallRecord(SERVER, "bob", "in", 1.0, "missed"))
    assert [r.peer for r in log.recent()] == ["bob"]


def test_a_log_of_another_version_is_read_as_empty_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "calls.json"
    newer = json.dumps({"version": 2, "calls": [{"whatever": "comes next"}]}).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, newer)
    os.close(fd)
    log = CallLog(path, server=SERVER)
    assert log.recent() == []
    with pytest.raises(OSError, match="another version"):
        log.add(CallRecord(SERVER, "bob", "in", 1.0, "missed"))
    assert path.read_bytes() == newer


def test_a_log_that_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.json"
    log = CallLog(path, server=SERVER)
    log.add(CallRecord(SERVER, "bob", "in", 1.0, "missed"))
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile):
        log.recent()


def _call(**changes: object) -> dict[str, object]:
    good: dict[str, object] = {
        "server": SERVER, "peer": "bob", "direction": "in", "at": 1.0, "result": "missed",
    }  # fmt: skip
    return {**good, **changes}


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 2, "calls": []},
        {"version": 1},
        {"version": 1, "calls": [{"server": SERVER, "peer": "bob"}]},
        {"version": 1, "calls": [_call(direction="sideways")]},
        {"version": 1, "calls": [_call(result="eaten")]},
        {"version": 1, "calls": [_call(peer=7)]},
        {"version": 1, "calls": [_call(at="noon")]},
        {"version": 1, "calls": [_call(seconds="long")]},
        [],
    ],
)
def test_a_malformed_log_is_a_value_error(doc: object) -> None:
    assert parse_log(json.dumps({"version": 1, "calls": [_call()]}).encode())  # the good one
    with pytest.raises(ValueError):
        parse_log(json.dumps(doc).encode())
