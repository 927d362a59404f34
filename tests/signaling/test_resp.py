"""RESP2 as pure code: commands encode as Redis reads them, replies parse from any split of the
stream, and a broken or oversized stream raises instead of growing a buffer."""

from __future__ import annotations

import pytest

from signaling import resp
from signaling.resp import ProtocolError, ReplyError, ReplyParser, encode_command

# Every kind of reply the bus gets, as Redis sends them, and what each parses to.
STREAM = [
    (b"+OK\r\n", b"OK"),
    (b":-42\r\n", -42),
    (b"$5\r\nhe\r\nl\r\n", b"he\r\nl"),  # a bulk string may hold CR LF
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"-NOSCRIPT No matching script\r\n", ReplyError("NOSCRIPT No matching script")),
    (
        b"*3\r\n$7\r\nmessage\r\n$4\r\nch:1\r\n$3\r\nv2 \r\n",
        [b"message", b"ch:1", b"v2 "],
    ),
    (b"*3\r\n$3\r\nA 1\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n", [b"A 1", 1, [b"x", None]]),
    (b"*0\r\n", []),
]


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert encode_command("EVALSHA", "ab", 0, b"x\r\ny") == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n0\r\n$4\r\nx\r\ny\r\n"
    )
    assert encode_command("SET", "k", "é") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n"
    with pytest.raises(TypeError):
        encode_command("SELECT", True)


def test_every_reply_kind_parses_at_once() -> None:
    data = b"".join(raw for raw, _ in STREAM)
    assert ReplyParser().feed(data) == [value for _, value in STREAM]


def test_replies_parse_the_same_however_the_stream_is_split() -> None:
    data = b"".join(raw for raw, _ in STREAM)
    expected = [value for _, value in STREAM]
    for cut in range(1, len(data)):
        parser = ReplyParser()
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == expected, cut
    parser = ReplyParser()  # and byte by byte
    assert [r for i in range(len(data)) for r in parser.feed(data[i : i + 1])] == expected


def test_an_incomplete_reply_waits_and_keeps_what_came_after_it() -> None:
    parser = ReplyParser()
    assert parser.feed(b"$10\r\n01234") == []
    assert parser.feed(b"56789\r\n:7\r\n*2\r\n:1\r\n") == [b"0123456789", 7]
    assert parser.feed(b":2\r\n") == [[1, 2]]


@pytest.mark.parametrize(
    "raw",
    [
        b"!3\r\nabc\r\n",  # not RESP2
        b"$abc\r\n",  # a length that is not a number
        b"$+5\r\nhello\r\n",
        b"$3\r\nabcXY",  # a bulk string without its CR LF
        b":12a\r\n",
        b":--5\r\n",  # int() would take neither of these: a ValueError out of the callback
        b":-\r\n",
        b"*1_0\r\n",
    ],
)
def test_a_broken_stream_raises(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(raw)


def test_limits_stop_a_stream_that_would_grow_without_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ProtocolError):  # a line that never ends
        ReplyParser().feed(b"+" + b"x" * resp.MAX_LINE)
    with pytest.raises(ProtocolError):  # a bulk string announced larger than the limit
        ReplyParser().feed(b"$%d\r\n" % (resp.MAX_BULK + 1))
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"*%d\r\n" % (resp.MAX_ARRAY + 1))
    with pytest.raises(ProtocolError):  # arrays nested deeper than the limit
        ReplyParser().feed(b"*1\r\n" * (resp.MAX_DEPTH + 1) + b":1\r\n")
    parser = ReplyParser()  # an array that never completes, however small each piece
    with pytest.raises(ProtocolError):
        parser.feed(b"*%d\r\n" % resp.MAX_ARRAY)
        for _ in range(3):  # each string whole, the array never: past MAX_PENDING
            parser.feed(b"$%d\r\n%s\r\n" % (resp.MAX_BULK, b"x" * resp.MAX_BULK))
    # Control: nested to the limit, and just under the line limit, parse.
    assert ReplyParser().feed(b"*1\r\n" * resp.MAX_DEPTH + b":1\r\n") != []
    assert ReplyParser().feed(b"+" + b"x" * (resp.MAX_LINE - 3) + b"\r\n") != []


def test_a_large_reply_in_small_pieces_is_parsed_once_not_again_per_piece() -> None:
    """An incomplete reply used to be parsed again from its start on every read: a few MB of
    nested arrays held the event loop for minutes. Each value is parsed once now, so a reply
    of 100,000 values in 4 KiB pieces costs about what it costs whole."""
    inner = b"*1000\r\n" + b":1\r\n" * 1000
    data = b"*100\r\n" + inner * 100
    parser, calls = ReplyParser(), 0
    length = resp.ReplyParser._value

    def counted(self: ReplyParser, buffer: bytearray, pos: int) -> tuple[resp.Reply, int]:
        nonlocal calls
        calls += 1
        return length(self, buffer, pos)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resp.ReplyParser, "_value", counted)
        got = [r for i in range(0, len(data), 4096) for r in parser.feed(data[i : i + 4096])]
    assert got == [[[1] * 1000] * 100]
    assert calls < 100 * 1001 + 1 + len(data) // 4096  # one per value, one per piece's tail
    with pytest.raises(ProtocolError):  # and a reply of more values than any of ours
        full = (b"*%d\r\n" % resp.MAX_ARRAY) + b":1\r\n" * resp.MAX_ARRAY
        ReplyParser().feed(b"*3\r\n" + full * 3)
