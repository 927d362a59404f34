"""The call log: recent and missed calls, for the home screen.

Each call that ends (and each caller answered ``busy`` while we were in another call) becomes
one :class:`CallRecord`: who, which way, when, how it ended and for how long we talked. The
phone writes it (``PhoneConfig.call_log``); the CLI keeps it in the config directory as
``calls.json``, a private file (0600, written as every private file is: ``privatefile``), the
newest :data:`KEEP` calls of all servers. It holds who called whom and when, never a key, a SAS
or audio: delete the file to forget it.

:func:`record_for` is pure: the record of a call from its role, outcome and times.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from voice.call.events import EndReason, FailReason, Outcome
from voice.crypto.privatefile import locked, read_secret_file, replace_private_file

__all__ = ["KEEP", "CallLog", "CallRecord", "Direction", "Result", "record_for"]

log = logging.getLogger("voice.phone")

KEEP = 100  # calls kept in the file, newest last
VERSION = 1

Direction = Literal["in", "out"]
Result = Literal["answered", "missed", "declined", "busy", "no answer", "cancelled", "failed"]
RESULTS: frozenset[str] = frozenset(Result.__args__)  # type: ignore[attr-defined]

_MISSED = {EndReason.CANCELLED_REMOTE, EndReason.NO_ANSWER, FailReason.SIGNALING_LOST}
_UNANSWERED: dict[EndReason | FailReason, Result] = {
    EndReason.DECLINED_LOCAL: "declined",
    EndReason.DECLINED_REMOTE: "declined",
    EndReason.BUSY: "busy",
    EndReason.NO_ANSWER: "no answer",
    EndReason.CANCELLED_LOCAL: "cancelled",
    EndReason.CANCELLED_REMOTE: "cancelled",
}


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call in the log. ``at`` is wall time when it began; ``seconds`` the time connected
    (None if it never was)."""

    server: str
    peer: str
    direction: Direction
    at: float
    result: Result
    seconds: float | None = None

    @property
    def missed(self) -> bool:
        return self.result == "missed"


def record_for(
    *,
    server: str,
    peer: str,
    incoming: bool,
    outcome: Outcome,
    began_at: float,
    connected_for: float | None,
) -> CallRecord:
    """The log's record of a call that ended. Connected at all: answered (whatever ended it).
    Else, incoming: missed when it stopped ringing without us (the caller gave up, nobody
    answered, our link went down), declined, or failed; outgoing: as the outcome says."""
    direction: Direction = "in" if incoming else "out"
    result: Result
    if connected_for is not None:
        result = "answered"
    elif incoming and outcome.reason in _MISSED:
        result = "missed"
    else:
        result = _UNANSWERED.get(outcome.reason, "failed")
    return CallRecord(server, peer, direction, began_at, result, connected_for)


class CallLog:
    """The log in ``path``, newest last; ``server`` is the server whose calls :meth:`recent`
    returns (every server's calls are kept). Reading and writing raise OSError and
    InsecureKeyFile as the other private files do; a file that does not parse reads as empty
    (it is history, not a key) and is replaced on the next call."""

    def __init__(self, path: Path, *, server: str, keep: int = KEEP) -> None:
        self.path = path
        self.server = server
        self.keep = keep
        self._warned: tuple[int, int, int] | None = None  # the unreadable file we warned of

    def add(self, record: CallRecord) -> None:
        """Append ``record`` (OSError if the file is another version's: it is left alone)."""
        with locked(self.path):
            records = [*self._read(keep_newer=True), record]
            data = {"version": VERSION, "calls": [asdict(r) for r in records[-self.keep :]]}
            replace_private_file(self.path, json.dumps(data, indent=1).encode())

    def recent(self, limit: int = 10) -> list[CallRecord]:
        """This server's newest ``limit`` calls, newest first."""
        mine = [r for r in self._read() if r.server == self.server]
        return mine[::-1][:limit]

    def _read(self, *, keep_newer: bool = False) -> list[CallRecord]:
        try:
            raw = read_secret_file(self.path)
        except FileNotFoundError:
            return []
        try:
            return parse_log(raw)
        except NewerLog as exc:
            if keep_newer:
                raise OSError(f"{self.path} was written by another version: {exc}") from exc
            self._warn_once(exc)
            return []
        except ValueError as exc:
            self._warn_once(exc)
            return []

    def _warn_once(self, exc: ValueError) -> None:
        """Say once per version of the file that it cannot be read (home reads it twice a
        second; the next call replaces a damaged one)."""
        try:
            st = self.path.stat()
        except OSError:
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._warned:
            self._warned = seen
            log.warning("%s is not a readable call log (%s): the next call starts it anew",
                        self.path, exc)  # fmt: skip


class NewerLog(ValueError):
    """A call log of another version: read as empty, never overwritten."""


def parse_log(raw: bytes) -> list[CallRecord]:
    """The records of a ``calls.json`` (ValueError if it is not one; NewerLog for a version
    this one does not know)."""
    try:
        doc = json.loads(raw)
        if doc["version"] != VERSION:
            raise NewerLog(f"version {doc['version']!r}")
        return [_record(item) for item in doc["calls"]]
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from exc


def _record(item: dict[str, object]) -> CallRecord:
    server, peer, direction = item["server"], item["peer"], item["direction"]
    at, result, seconds = item["at"], item["result"], item.get("seconds")
    if not (isinstance(server, str) and isinstance(peer, str)):
        raise ValueError("server and peer must be strings")
    if direction not in ("in", "out") or result not in RESULTS:
        raise ValueError(f"unknown direction or result: {direction!r}, {result!r}")
    if not isinstance(at, int | float) or not (seconds is None or isinstance(seconds, int | float)):
        raise ValueError("at and seconds must be numbers")
    return CallRecord(server, peer, direction, float(at), result,  # type: ignore[arg-type]
                      None if seconds is None else float(seconds))  # fmt: skip
