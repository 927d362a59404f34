"""``kill -USR1`` a running ``voice`` process: it prints every asyncio task's stack to stderr.

faulthandler shows the threads of a hung process, but a hung coroutine leaves every thread
idle (the event loop waits in ``select``): this shows which task waits on what, through the
whole chain of awaits (``Task.print_stack`` shows only its outermost coroutine). Only task
names, code locations, source lines and the type of what the innermost await waits on are
printed, never a value (no key, SAS or audio).
"""

from __future__ import annotations

import asyncio
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
        signal.signal(signal.SIGUSR1, _dump)


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


def _awaits(coro: Any) -> Iterator[tuple[FrameType, object]]:
    """Each suspended frame from ``coro`` inwards, with what it awaits."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        awaited = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if frame is None:
            return
        yield frame, awaited
        coro = awaited


def _dump(signum: int, frame: FrameType | None) -> None:
    """Runs between two bytecodes of the main thread, inside the event loop if one runs."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        print("voice: no event loop is running", file=sys.stderr, flush=True)
        return
    blocks = task_stacks(loop)
    print(f"voice: {len(blocks)} asyncio tasks", *blocks, sep="\n", file=sys.stderr, flush=True)
