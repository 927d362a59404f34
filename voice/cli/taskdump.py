"""``kill -USR1`` a running ``voice`` process: it prints every asyncio task's stack to stderr.

faulthandler shows the threads of a hung process, but a hung coroutine leaves every thread
idle (the event loop waits in ``select``): this shows which task waits on what, through the
whole chain of awaits (``Task.print_stack`` shows only its outermost coroutine). The dump runs
as a callback of the event loop, between two task steps, so every task is suspended and shown
whole. Printed: task names (they hold usernames and call ids), code locations, source lines
and the type of what the innermost await waits on; never a value (no key, SAS or audio).
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any


def install() -> None:
    """Dump the tasks on SIGUSR1 (the main thread of a real process only; not on Windows)."""
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, _on_signal)


def task_stacks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """One block of text per task of ``loop``: its name, then each frame it awaits through."""
    current = asyncio.current_task(loop)
    blocks = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        lines = [f"-- task {task.get_name()}" + (" (running)" if task is current else "")]
        innermost: object = task.get_coro()
        for frame, awaited in _awaits(task.get_coro()):
            code = frame.f_code
            lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
            source = linecache.getline(code.co_filename, frame.f_lineno).strip()
            if source:
                lines.append(f"    {source}")
            innermost = awaited
        if innermost is not None:
            lines.append(f"  waiting on a {type(innermost).__name__}")
        blocks.append("\n".join(lines))
    return blocks


_FRAME = ("cr_frame", "gi_frame", "ag_frame")
_AWAITED = ("cr_await", "gi_yieldfrom", "ag_await")


def _awaits(coro: Any) -> Iterator[tuple[FrameType, object]]:
    """Each suspended frame from ``coro`` inwards (coroutines, generators and async
    generators), with what it awaits."""
    while coro is not None:
        frame = next((getattr(coro, a) for a in _FRAME if getattr(coro, a, None)), None)
        awaited = next((getattr(coro, a) for a in _AWAITED if getattr(coro, a, None)), None)
        if frame is None:
            return
        yield frame, awaited
        coro = awaited


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Runs between two bytecodes of the main thread: only hands the dump to the loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _write(["voice: no event loop is running"])
        return
    loop.call_soon_threadsafe(_dump, loop)


def _dump(loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(Exception):  # a diagnosis must never take the phone down
        blocks = task_stacks(loop)
        _write([f"voice: {len(blocks)} asyncio tasks", *blocks])


def _write(lines: list[str]) -> None:
    err = sys.stderr
    if err is None:
        return
    with contextlib.suppress(OSError, ValueError):  # nobody reads it any more, or closed
        print(*lines, sep="\n", file=err, flush=True)
