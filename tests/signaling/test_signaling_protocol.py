"""The wire parser, pure: one error code for every way a frame can be wrong; no sockets."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.errors import FrameError
from signaling.messages import (
    Challenge,
    Deliver,
    Error,
    Login,
    Send,
    Sent,
    Turn,
    TurnCredentials,
    Welcome,
)
from signaling.protocol import (
    VERSION,
    ErrorCode,
    deliver_frame,
    encode,
    login_message,
    parse_client_frame,
    parse_server_frame,
)
from signaling.wire import USERNAME_RE, b64decode_strict, is_username

KEY = base64.b64encode(b"k" * 32).decode()
SIG = base64.b64encode(b"s" * 64).decode()
BODY = base64.b64encode(b"sealed").decode()


def B64(n: int) -> str:
    return base64.b64encode(b"x" * n).decode()


def LOGIN(**changes: Any) -> dict[str, Any]:
    """The fields of a well-formed login v2 frame, with ``changes``."""
    base = {"user": "alice", "key": KEY, "sig": SIG, "host": "127.0.0.1", "binding": B64(32)}
    return {**base, **changes}


def frame(**fields: Any) -> str:
    return json.dumps({"v": 1, **fields})


def code_of(data: str | bytes, **limits: int) -> str:
    with pytest.raises(FrameError) as info:
        parse_client_frame(data, **limits)
    return info.value.code


LOGIN_FIELDS: dict[str, Any] = {
    "server": "srv",
    "server_id": "0123456789abcdef",
    "host": "example.org",
    "binding": b"B" * 32,
    "user": "alice",
    "key": b"K" * 32,
    "nonce": b"N" * 32,
}


def test_login_message_is_the_documented_layout() -> None:
    got = login_message(**LOGIN_FIELDS)
    want = b"voice-login-v2"
    for value in (b"srv", b"0123456789abcdef", b"example.org", b"B" * 32, b"alice"):
        want += struct.pack(">I", len(value)) + value
    want += struct.pack(">I", 32) + b"K" * 32 + struct.pack(">I", 32) + b"N" * 32
    assert got == want
    # length prefixes keep fields apart: moving a byte between server and user changes it
    assert (
        login_message(**{**LOGIN_FIELDS, "server": "sr", "server_id": "v0123456789abcdef"}) != got
    )
    # every field is bound: the certificate hash, the host and the id included
    for name, other in (("binding", b""), ("host", "example.com"), ("server_id", "f" * 16)):
        assert login_message(**{**LOGIN_FIELDS, name: other}) != got


def test_valid_client_frames_parse() -> None:
    fields = {"user": "alice", "key": KEY, "sig": SIG, "host": "127.0.0.1", "binding": ""}
    login = parse_client_frame(frame(type="login", **fields))
    assert login == Login("alice", b"k" * 32, b"s" * 64, "127.0.0.1", b"")
    binding = base64.b64encode(b"h" * 32).decode()
    login = parse_client_frame(frame(type="login", **{**fields, "binding": binding}))
    assert login.binding == b"h" * 32  # type: ignore[union-attr]
    send = parse_client_frame(frame(type="send", id="1", to="bob", body=BODY))
    assert send == Send("1", "bob", BODY, body_len=6)
    assert parse_client_frame(frame(type="turn", id="x" * 64)) == Turn("x" * 64)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("", ErrorCode.BAD_JSON),
        ('{"v":1,"type":"turn","id":"1","id":"2"}', ErrorCode.BAD_JSON),  # duplicate key
        ('{"v":NaN,"type":"turn","id":"1"}', ErrorCode.BAD_JSON),
        ('{"v":1,"type":"turn","id":"1","x":' + "9" * 5000 + "}", ErrorCode.BAD_JSON),
        (b'{"v":1}', ErrorCode.BAD_FRAME),
        ("[1, 2]", ErrorCode.BAD_TYPE),
        ('"a string"', ErrorCode.BAD_TYPE),
        ('{"type":"turn","id":"1"}', ErrorCode.MISSING_FIELD),
        ('{"v":1,"id":"1"}', ErrorCode.MISSING_FIELD),
        ('{"v":true,"type":"turn","id":"1"}', ErrorCode.BAD_TYPE),
        ('{"v":"1","type":"turn","id":"1"}', ErrorCode.BAD_TYPE),
        ('{"v":2,"type":"turn","id":"1"}', ErrorCode.BAD_VERSION),
        ('{"v":1,"type":7,"id":"1"}', ErrorCode.BAD_TYPE),
        ('{"v":1,"type":"deliver","from":"bob","body":""}', ErrorCode.UNKNOWN_TYPE),
        ('{"v":1,"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
        (frame(type="send", id="1", to="bob"), ErrorCode.MISSING_FIELD),
        (frame(type="send", id="1", to="bob", body=BODY, **{"from": "eve"}), ErrorCode.EXTRA_FIELD),
        (frame(type="turn", id=1), ErrorCode.BAD_TYPE),
        (frame(type="turn", id=""), ErrorCode.BAD_ID),
        (frame(type="turn", id="x" * 65), ErrorCode.BAD_ID),
        (frame(type="send", id="1", to=["bob"], body=BODY), ErrorCode.BAD_TYPE),
        (frame(type="send", id="1", to="Bob", body=BODY), ErrorCode.BAD_USERNAME),
        (frame(type="send", id="1", to="bob", body=None), ErrorCode.BAD_TYPE),
        (frame(type="send", id="1", to="bob", body="QR=="), ErrorCode.BAD_BASE64),
        (frame(type="login", **LOGIN(key=KEY[:-4])), ErrorCode.BAD_BASE64),
        (frame(type="login", **LOGIN(sig=SIG.replace("c", "-"))), ErrorCode.BAD_BASE64),
        (frame(type="login", **LOGIN(user="9lives")), ErrorCode.BAD_USERNAME),
        (frame(type="login", user="alice", key=KEY, sig=SIG), ErrorCode.MISSING_FIELD),  # v1
        (frame(type="login", **LOGIN(host="Example.org")), ErrorCode.BAD_TYPE),  # not normal
        (frame(type="login", **LOGIN(host="[::1]")), ErrorCode.BAD_TYPE),
        (frame(type="login", **LOGIN(host="a b")), ErrorCode.BAD_TYPE),
        (frame(type="login", **LOGIN(host="")), ErrorCode.BAD_TYPE),
        (frame(type="login", **LOGIN(host=7)), ErrorCode.BAD_TYPE),
        (frame(type="login", **LOGIN(binding="AAAA")), ErrorCode.BAD_BASE64),  # 3 bytes
        (frame(type="login", **LOGIN(binding=B64(65))), ErrorCode.BAD_BASE64),
        (frame(type="login", **LOGIN(binding=None)), ErrorCode.BAD_TYPE),
        (frame(type="login", **LOGIN(extra="x")), ErrorCode.EXTRA_FIELD),
        ('{"v":1,"type":"turn","id":"1","x":[[[[[1]]]]]}', ErrorCode.TOO_DEEP),
        ("[" * 100_000 + "]" * 100_000, ErrorCode.TOO_LARGE),
    ],
)
def test_every_malformed_frame_has_its_code(data: str | bytes, code: str) -> None:
    assert code_of(data) == code


def test_deep_nesting_is_refused_before_json_recursion() -> None:
    deep = '{"v":1,"type":"turn","id":"1","x":' + "[" * 20_000 + "]" * 20_000 + "}"
    assert code_of(deep, max_frame_bytes=10**6) == ErrorCode.TOO_DEEP
    brackets_in_strings = frame(type="turn", id="[[[[[[[[")
    assert parse_client_frame(brackets_in_strings) == Turn("[[[[[[[[")


def test_depth_check_is_linear_in_unterminated_escaped_strings() -> None:
    """A quote followed by escaped quotes never closes: the old bracket scanner restarted at
    every quote, so one 64 KB frame held the event loop for ~30 s (256 KB: minutes)."""
    script = (
        "from signaling.errors import FrameError\n"
        "from signaling.protocol import parse_client_frame\n"
        "data = '\"' + '\\\\\"' * 131_072 + '[' * 5\n"
        "try:\n"
        "    parse_client_frame(data, max_frame_bytes=10**6)\n"
        "except FrameError as exc:\n"
        "    print(exc.code)\n"
    )
    # A child process, because the regex engine holds the GIL and ignores signals.
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() in (ErrorCode.TOO_DEEP, ErrorCode.BAD_JSON)


def test_size_limits_count_utf8_bytes_and_decoded_body() -> None:
    assert code_of(frame(type="turn", id="é" * 40), max_frame_bytes=80) == ErrorCode.TOO_LARGE
    big = base64.b64encode(b"x" * 101).decode()
    data = frame(type="send", id="7", to="bob", body=big)
    with pytest.raises(FrameError) as info:
        parse_client_frame(data, max_body_bytes=100)
    assert (info.value.code, info.value.id) == (ErrorCode.BODY_TOO_LARGE, "7")


def test_errors_carry_the_message_id_when_readable() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(frame(type="send", id="42", to="bob", body=BODY, extra=1))
    assert info.value.id == "42"
    with pytest.raises(FrameError) as info:
        parse_client_frame(frame(type="login", user="Alice", key=KEY, sig=SIG))
    assert info.value.kind == "login"


@pytest.mark.parametrize(
    "text",
    ["QQ", "QR==", "QQ==\n", " QQ==", "QQ=", "Q===", "-_8=", "QQ==QQ==", "ÿÿÿÿ"],
)
def test_base64_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode_strict(text)


@given(st.binary(max_size=200))
def test_base64_round_trip(raw: bytes) -> None:
    assert b64decode_strict(base64.b64encode(raw).decode()) == raw


@pytest.mark.parametrize("name", ["abc", "a" * 32, "a-b_c9", "z12"])
def test_usernames_accepted(name: str) -> None:
    assert is_username(name)


@pytest.mark.parametrize(
    "name", ["ab", "a" * 33, "1abc", "_abc", "Abc", "ab c", "abc\n", "abç", "", "ab.c"]
)
def test_usernames_refused(name: str) -> None:
    assert not is_username(name)


server_messages = st.one_of(
    st.builds(
        Challenge,
        st.text(min_size=1, max_size=255),
        st.from_regex(r"[a-z0-9-]{16,64}", fullmatch=True),
        st.binary(min_size=32, max_size=32),
    ),
    st.builds(Welcome, st.from_regex(r"[a-z][a-z0-9_-]{2,31}", fullmatch=True)),
    st.builds(Sent, st.text(min_size=1, max_size=64)),
    st.builds(
        Deliver, st.from_regex(r"[a-z][a-z0-9_-]{2,31}", fullmatch=True), st.binary(max_size=300)
    ),
    st.builds(
        TurnCredentials,
        st.text(min_size=1, max_size=64),
        st.text(min_size=1, max_size=100),
        st.text(min_size=1, max_size=100),
        st.integers(1, 2**31 - 1),
        st.lists(st.text(min_size=1, max_size=50), min_size=1, max_size=16).map(tuple),
    ),
    st.builds(
        Error,
        st.text(min_size=1, max_size=64),
        st.text(max_size=200),
        st.none() | st.text(min_size=1, max_size=64),
    ),
)


@settings(max_examples=300)
@given(server_messages)
def test_server_frames_round_trip(message: Any) -> None:
    assert parse_server_frame(encode(message)) == message


def test_deliver_frame_forwards_the_base64_text_unchanged() -> None:
    assert parse_server_frame(deliver_frame("alice", BODY)) == Deliver("alice", b"sealed")


@settings(max_examples=300)
@given(st.from_regex(USERNAME_RE, fullmatch=True), st.binary(max_size=300))
def test_deliver_frame_is_the_json_text_of_any_checked_name_and_body(
    user: str, body: bytes
) -> None:
    text = base64.b64encode(body).decode()
    expected = {"v": VERSION, "type": "deliver", "from": user, "body": text}
    assert deliver_frame(user, text) == json.dumps(expected, separators=(",", ":"))


def test_server_frame_parser_refuses_a_spoofed_or_malformed_deliver() -> None:
    with pytest.raises(FrameError):
        parse_server_frame(json.dumps({"v": 1, "type": "deliver", "from": "A!", "body": BODY}))
    with pytest.raises(FrameError):
        parse_server_frame(json.dumps({"v": 1, "type": "send", "id": "1", "to": "a", "body": ""}))
