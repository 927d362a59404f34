"""RESP2, the protocol Redis speaks, as pure code: a command to bytes, bytes to replies.

The cluster bus talks to Redis through this and :mod:`signaling.redisconn` rather than
redis-py: redis-py spends about 110 us of Python on one pipeline round trip and as much on
reading one pub/sub message, and with four instances on two cores an instance pays that per
flush on batches of one or two envelopes (``bench/signaling_load.py``). This costs a third
of it. The bus needs little of Redis: commands that are arrays of bulk strings, and replies
that are strings, integers, nulls, errors and arrays of those (RESP2; no ``HELLO 3``).

Replies are ``bytes`` (a simple or bulk string), ``int``, ``None`` (a null bulk string or
array), ``list`` (an array) or :class:`ReplyError` (an error reply: returned, not raised, so
that one failing command among pipelined ones leaves the others' replies in step).
Anything else, or a reply larger than the limits below, raises :class:`ProtocolError`: the
caller drops the connection (Redis is inside the deployment, but a broken stream must not
grow a buffer without end, nor hold the loop). Parsing resumes where it stopped when more
bytes come, so a reply costs time linear in its size however it is split.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BULK = 16 << 20  # bytes in one bulk string (a bus message is about 1 MiB at most)
MAX_ARRAY = 1 << 16  # elements in one array (the bus's largest: 1,000 names)
MAX_PENDING = 2 * MAX_BULK  # bytes of replies not yet complete
MAX_DEPTH = 8  # arrays within arrays
MAX_ELEMENTS = 1 << 17  # values in one reply, nested ones included
MAX_LINE = 4_096  # bytes of a header or simple line (a type byte, a length, an error text)


class ProtocolError(ValueError):
    """The bytes from Redis are not RESP2, or exceed the limits: drop the connection."""


@dataclass(frozen=True, slots=True)
class ReplyError:
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``): the command failed, the stream is fine."""

    message: str


Reply = bytes | int | None | list["Reply"] | ReplyError
Arg = bytes | str | int


def encode_command(*args: Arg) -> bytes:
    """One command as RESP: an array of bulk strings (an ``int`` in decimal)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):  # an int, but surely a mistake
            raise TypeError("a Redis argument cannot be a bool")
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = bytes(arg)
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


class ReplyParser:
    """Replies from a stream fed in pieces: :meth:`feed` returns those now complete.

    Resumable: the arrays a reply has open are kept with what they hold so far, so each byte
    is parsed once however the stream is split (parsing an incomplete reply again from its
    start on every read was quadratic: a few MB of nested arrays held the loop for minutes).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._open: list[tuple[list[Reply], int]] = []  # arrays being filled, and their size
        self._elements = 0  # in the reply under way
        self._taken = 0  # bytes of it consumed so far

    def feed(self, data: bytes) -> list[Reply]:
        buffer = self._buffer
        buffer += data
        replies: list[Reply] = []
        pos = 0
        while pos < len(buffer):
            value, end = self._value(buffer, pos)
            if end < 0:  # incomplete: wait for more
                break
            self._taken += end - pos
            pos = end
            if value is _OPENED:  # its elements follow
                continue
            while True:  # a value completes the arrays it fills, perhaps several
                if not self._open:
                    replies.append(value)
                    self._elements = self._taken = 0
                    break
                items, size = self._open[-1]
                items.append(value)
                if len(items) < size:
                    break
                self._open.pop()
                value = items
        if pos:
            del buffer[:pos]
        if self._taken + len(buffer) > MAX_PENDING:  # larger than any complete reply may be
            raise ProtocolError("a reply larger than the limits")
        return replies

    def _value(self, buffer: bytearray, pos: int) -> tuple[Reply, int]:
        """The value at ``pos`` (or :data:`_OPENED`: an array begun) and where it ends, or
        ``(None, -1)`` if it is not all here."""
        eol = buffer.find(b"\r\n", pos, pos + MAX_LINE)
        if eol < 0:
            if len(buffer) - pos >= MAX_LINE:
                raise ProtocolError("a reply line without an end")
            return None, -1
        self._elements += 1
        if self._elements > MAX_ELEMENTS:
            raise ProtocolError("a reply with too many elements")
        kind, line, after = buffer[pos], bytes(buffer[pos + 1 : eol]), eol + 2
        if kind == 0x24:  # $ bulk string
            size = _length(line)
            if size < 0:
                return None, after
            if size > MAX_BULK:
                raise ProtocolError(f"a bulk string of {size} bytes")
            end = after + size
            if len(buffer) < end + 2:
                self._elements -= 1  # counted again when it is all here
                return None, -1
            if buffer[end : end + 2] != b"\r\n":
                raise ProtocolError("a bulk string without its end")
            return bytes(buffer[after:end]), end + 2
        if kind == 0x2B:  # + simple string
            return line, after
        if kind == 0x3A:  # : integer
            digits = line[1:] if line[:1] == b"-" else line
            if not digits.isdigit() or len(digits) > 19:
                raise ProtocolError("not an integer reply")
            return int(line), after
        if kind == 0x2D:  # - error
            return ReplyError(line.decode(errors="replace")), after
        if kind == 0x2A:  # * array
            count = _length(line)
            if count < 0:
                return None, after
            if count > MAX_ARRAY or len(self._open) >= MAX_DEPTH:
                raise ProtocolError("an array too large or too deep")
            if count == 0:
                return [], after
            self._open.append(([], count))
            return _OPENED, after
        raise ProtocolError(f"unknown reply type {bytes([kind])!r}")


_OPENED: Reply = ReplyError("")  # an array begun (compared by identity, never returned)


def _length(line: bytes) -> int:
    """A bulk string's or array's length: digits, or ``-1`` for null."""
    if line == b"-1":
        return -1
    if not line.isdigit() or len(line) > 12:
        raise ProtocolError("not a length")
    return int(line)
