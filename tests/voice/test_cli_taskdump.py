"""``kill -USR1`` on a running ``voice`` shows what each asyncio task waits on, and the process
goes on: the diagnosis of a hung coroutine, whose threads all look idle."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.voice.cli_harness import signaling_server, start_voice
from voice.exitcodes import ExitCode

pytestmark = pytest.mark.timeout(120)


async def test_sigusr1_prints_every_task_stack_and_the_phone_keeps_listening(
    tmp_path: Path,
) -> None:
    async with signaling_server() as url:
        bob = await start_voice(tmp_path / "bob", "listen", "--silence", "--no-output",
                                "--no-prompt", server=url, user="bob")  # fmt: skip
        await bob.wait_for("Waiting for a call")
        bob.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(1.0)
        assert bob.proc.returncode is None  # still running, not killed by the signal
        bob.interrupt()
        assert await bob.finish() == ExitCode.OK, bob.stdout + bob.stderr
    dump = bob.stderr
    assert "asyncio tasks" in dump, dump
    assert "-- task Task-1" in dump  # asyncio.run's main task, the command itself
    assert "voice/cli/listen.py" in dump  # where the listening command waits
    assert "in _listen_loop" in dump  # through the awaits, not only each task's outer frame
    assert "Traceback" not in dump, dump
