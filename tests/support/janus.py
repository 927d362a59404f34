"""A real Janus (VideoRoom over WebSockets) in the test's temporary folder.

The launcher itself is ``voice.group.janusd.run_janus`` (the group demo starts Janus the same
way); this adds what a test wants on top: a failing test shows the tail of Janus's log.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from voice.group.janusd import JanusServer, run_janus


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.asynccontextmanager
async def running_janus(tmp_path: Path) -> AsyncIterator[JanusServer]:
    """Start Janus in ``tmp_path / "janus"``; stop it on exit (SIGTERM, then SIGKILL)."""
    async with run_janus(tmp_path / "janus") as server:
        try:
            yield server
        except BaseException as exc:
            exc.add_note(f"Janus log ({server.log}) ends with:\n{_tail(server.log)}")
            raise
