"""What the user sees and types during a call: progress lines, the SAS, yes/no prompts.

Prompts read standard input without blocking the event loop (``add_reader`` on a terminal or a
pipe; a regular file is read at once), so a call keeps running while a question waits, and a
question can be cancelled when the call ends. End of input counts as "no".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
from typing import TextIO

from voice.crypto.sas import Sas

# Streams with a yes/no question waiting on their current line (by id: a TextIO need not hash).
_open_questions: set[int] = set()


def say(out: TextIO, text: str) -> None:
    """One line for the user. A question left waiting on the line (another event came while
    the user had not answered: the caller gave up, the link dropped) is ended first, so the
    line never reads ``... [y/N] Missed call``."""
    if id(out) in _open_questions:
        _open_questions.discard(id(out))
        print("", file=out)
    print(text, file=out, flush=True)


def sas_lines(sas: Sas, peer: str) -> list[str]:
    """The SAS as both sides show it: words to read aloud, and emoji with their names."""
    emoji = "  ".join(f"{e} ({n})" for e, n in zip(sas.emoji, sas.emoji_names, strict=True))
    return [
        f"Security code (SAS): {' '.join(sas.words).upper()}",
        f"                     {emoji}",
        f"Read the words to {peer}: if {peer} sees the same, nobody is in the middle.",
    ]


class LineReader:
    """Lines from a file descriptor, read without blocking the loop; None at end of input.

    Reads the descriptor itself (not a buffered text stream), so data buffered for a later
    question is never hidden from the event loop.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = sys.stdin if stream is None else stream
        self._buffer = bytearray()
        self._eof = self._stream is None

    def _fd(self) -> int | None:
        try:
            return self._stream.fileno()
        except (OSError, ValueError, AttributeError):
            return None

    def echoes(self) -> bool:
        """Whether the user's typing shows (a terminal echoes the answer and its newline)."""
        fd = self._fd()
        return fd is not None and os.isatty(fd)

    def discard_typed_ahead(self) -> None:
        """On a terminal, forget what was typed before the next question (a "y" meant for an
        earlier prompt must not accept a new caller). Piped input is a script's answers, in
        order: kept."""
        fd = self._fd()
        if fd is None or not os.isatty(fd):
            return
        self._buffer.clear()
        with contextlib.suppress(OSError, termios.error):
            termios.tcflush(fd, termios.TCIFLUSH)

    async def readline(self) -> str | None:
        fd = self._fd()
        while b"\n" not in self._buffer and not self._eof:
            if fd is None:  # an in-memory stream never blocks
                chunk = self._stream.readline().encode()
            else:
                chunk = await _read_fd(fd)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        if not self._buffer:
            return None
        cut = self._buffer.find(b"\n")
        cut = len(self._buffer) if cut < 0 else cut + 1
        line = bytes(self._buffer[:cut])
        del self._buffer[:cut]
        return line.decode("utf-8", errors="replace")


async def _read_fd(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, on_ready)
    except (OSError, ValueError, NotImplementedError):  # a regular file: os.read won't block
        return os.read(fd, 4096)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    try:
        return os.read(fd, 4096)
    except BlockingIOError:  # pragma: no cover - spurious wake-up
        return await _read_fd(fd)


async def ask_yes_no(out: TextIO, question: str, lines: LineReader) -> bool:
    """Ask ``question [y/N]``; True only for an answer starting with y."""
    print(f"{question} [y/N] ", end="", file=out, flush=True)
    _open_questions.add(id(out))
    answered = False
    try:
        line = await lines.readline()
        answered = line is not None
    finally:  # answered, or gone (the call ended): end the line, unless news already did
        if id(out) in _open_questions:
            _open_questions.discard(id(out))
            if not (answered and lines.echoes() and _is_terminal(out)):  # no echo ended it
                print("", file=out, flush=True)
    return line is not None and line.strip().lower().startswith("y")


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (OSError, ValueError, AttributeError):
        return False


class Interrupt:
    """Ctrl-C (and SIGTERM) set an event instead of raising, so calls end cleanly."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._installed: list[int] = []

    def install(self) -> None:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.event.set)
                self._installed.append(sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()
