"""Real processes for the CLI tests: `python -m signaling` and `voice ...` as subprocesses.

Each user gets its own config directory; output is collected line by line so a test can wait
for "Connected" before doing the next thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VOICE = [sys.executable, "-m", "voice.cli"]
HARNESS_SERVER_ID = "0123456789abcdef0123456789abcdef"


@contextlib.asynccontextmanager
async def signaling_server(port: int = 0, server_id: str = HARNESS_SERVER_ID) -> AsyncIterator[str]:
    """A real `python -m signaling` on ``port`` (default: a free one) with a registry in memory;
    yields its URL. Every one has the same ``server_id`` unless told otherwise: restarted on
    the same port, it is the same deployment that lost its registry (the CLI pins the id)."""
    env = {**os.environ, "VOICE_SIGNALING_HTTP_PORT": "0", "VOICE_SIGNALING_SERVER_ID": server_id}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling", "--port", str(port), "--db", ":memory:",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(30):
            while True:
                raw = await proc.stderr.readline()
                if not raw:
                    raise RuntimeError("the signaling server exited before listening")
                with contextlib.suppress(ValueError):
                    event = json.loads(raw)
                    if event.get("event") == "listening":
                        break
        drain = asyncio.ensure_future(_drain(proc.stderr))
        yield f"ws://127.0.0.1:{event['port']}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            drain.cancel()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


@dataclass
class VoiceProc:
    """A running `voice` command; ``lines`` collects its stdout as it comes."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    stderr: str = ""  # all of it, once the process has ended (finish)
    _reader: asyncio.Task[None] | None = None
    _err_reader: asyncio.Task[bytes] | None = None
    _seen: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def attach(cls, proc: asyncio.subprocess.Process, stdin: bytes | None) -> VoiceProc:
        """Follow ``proc``'s stdout, and read its stderr all along (a full pipe would block a
        chatty process, and the stack dump of a hung one); ``stdin`` given: written and
        closed at once."""
        vp = cls(proc)
        vp._reader = asyncio.ensure_future(vp._read())
        if proc.stderr is not None:
            vp._err_reader = asyncio.ensure_future(proc.stderr.read())
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        return vp

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while raw := await self.proc.stdout.readline():
                self.lines.append(raw.decode("utf-8", errors="replace"))
                self._seen.set()
        finally:
            self._seen.set()  # the end of the output: a waiter sees it at once, not at its limit

    async def wait_for(self, text: str, limit: float = 20.0) -> str:
        """The first stdout line containing ``text`` (fails if the process ends first)."""
        async with asyncio.timeout(limit):
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"{text!r} never printed:\n{self.stdout}{self.stderr}")
                self._seen.clear()
                await self._seen.wait()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())

    async def finish(self, limit: float = 30.0) -> int:
        """Wait for the exit; returns the exit code (kills the process after ``limit`` s)."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), limit)
        except TimeoutError:
            # Hung: SIGUSR1 makes it print its asyncio tasks' stacks (voice.cli.taskdump), then
            # SIGABRT makes faulthandler (PYTHONFAULTHANDLER, set by start_voice) print every
            # thread's stack, so that the failure says where it hangs.
            with contextlib.suppress(ProcessLookupError):  # it may end meanwhile
                self.proc.send_signal(signal.SIGUSR1)
                await asyncio.sleep(1.0)
                self.proc.send_signal(signal.SIGABRT)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            stderr = await self._all_stderr()
            raise AssertionError(
                f"did not exit within {limit} s; its output, then its tasks and threads:\n"
                f"{self.stdout[-3000:]}\n{stderr[-20000:]}"
            ) from None
        if self._reader is not None:
            await self._reader
        self.stderr = await self._all_stderr()
        return code

    async def _all_stderr(self) -> str:
        """Its stderr once it has ended (the pipe may outlive it briefly in a child)."""
        if self._err_reader is None:
            return ""
        try:
            data = await asyncio.wait_for(asyncio.shield(self._err_reader), 10)
        except TimeoutError:
            return "(stderr still open 10 s after the exit)"
        return data.decode("utf-8", errors="replace")

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    async def stop_listening(self, limit: float = 30.0) -> int:
        """`voice listen` runs until stopped: once it waits for the next call, Ctrl-C; returns
        the exit code (the last call's)."""
        await self.wait_for("Waiting for the next call", limit)
        self.interrupt()
        return await self.finish(limit)


async def start_voice(
    conf: Path,
    *argv: str,
    server: str | None = None,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> VoiceProc:
    """Start ``voice --config-dir conf [--server S] [--user U] argv...``.

    ``stdin`` given: written and closed at once. None: stdin stays an open pipe (``send``).
    """
    args = [*VOICE, "--config-dir", str(conf)]
    if server is not None:
        args += ["--server", server]
    if user is not None:
        args += ["--user", user]
    full_env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})}
    full_env.pop("VOICE_USER", None)
    proc = await asyncio.create_subprocess_exec(
        *args, *argv, env=full_env, cwd=str(REPO),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return VoiceProc.attach(proc, stdin)


async def run_voice(conf: Path, *argv: str, limit: float = 60.0, **kw: object) -> VoiceProc:
    """Run a `voice` command to completion (see :func:`start_voice`)."""
    kw.setdefault("stdin", b"")
    vp = await start_voice(conf, *argv, **kw)  # type: ignore[arg-type]
    await vp.finish(limit)
    return vp
