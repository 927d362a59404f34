"""Structured logs: one JSON object per line on stderr.

Callers pass fields as ``extra={"fields": {...}}``. Only routing metadata is ever logged
(session ids, usernames, addresses, error codes); envelope bodies, keys and signatures never.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(str(key), value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send the signaling (and websockets) loggers to ``stream`` as JSON lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("signaling.websockets").setLevel(logging.WARNING)


class Throttle:
    """At most one event per ``interval`` seconds (clock injected); counts what it held back."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._held = 0

    def allow(self) -> int | None:
        """None to hold this event back; else how many were held back since the last one."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return None
        self._next = now + self._interval
        held, self._held = self._held, 0
        return held
