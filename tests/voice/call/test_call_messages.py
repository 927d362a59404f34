"""Call message wire format: round trips, canonical form, and strict rejection."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.call import messages as m
from voice.errors import BadCallMessage, VoiceError

keys = st.binary(min_size=32, max_size=32)
continuity = st.binary(min_size=64, max_size=64)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
descriptions = st.dictionaries(st.text(max_size=8), json_value, max_size=6)
reasons = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
messages = st.one_of(
    st.builds(m.Offer, keys, descriptions),
    st.builds(m.Ringing, keys, continuity, descriptions),
    st.builds(m.Reveal, keys, continuity),
    st.sampled_from([m.Accept(), m.Decline(), m.Busy(), m.Cancel(), m.Hangup()]),
    st.builds(m.CallError, reasons),
    st.builds(m.Hold, st.integers(1, m.MAX_HOLD_EPOCH)),
    st.builds(m.Resume, st.integers(1, m.MAX_HOLD_EPOCH)),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg: m.Message) -> None:
    data = m.encode(msg)
    assert m.decode(data) == msg
    assert m.encode(m.decode(data)) == data


@settings(max_examples=200, deadline=None)
@given(messages)
def test_encoding_is_canonical_json(msg: m.Message) -> None:
    data = m.encode(msg)
    obj = json.loads(data)
    assert data == json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert obj["type"] == msg.TYPE and obj["v"] == 1


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_any_single_byte_change_is_rejected_or_still_exact(msg: m.Message, data: Any) -> None:
    raw = bytearray(m.encode(msg))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    try:
        decoded = m.decode(bytes(raw))
    except BadCallMessage:
        return
    assert m.encode(decoded) == bytes(raw)  # only another valid canonical message gets through


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_bad_call_message(data: bytes) -> None:
    try:
        m.decode(data)
    except BadCallMessage as exc:
        assert isinstance(exc, VoiceError) and isinstance(exc, ValueError)


def test_canonical_description_ignores_key_order_and_rejects_junk() -> None:
    a = m.canonical_description({"b": [1, {"y": 2, "x": "é"}], "a": None})
    b = m.canonical_description({"a": None, "b": [1, {"x": "é", "y": 2}]})
    assert a == b == '{"a":null,"b":[1,{"x":"é","y":2}]}'.encode()
    bad: Any
    for bad in ([], {"a": float("nan")}, {"a": b"bytes"}, {1: "x"}, {"a": (1, 2j)}):
        with pytest.raises(BadCallMessage):
            m.canonical_description(bad)


K64 = base64.b64encode(b"\x01" * 32).decode()
C64 = base64.b64encode(b"\x02" * 64).decode()


def reveal_obj(**override: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"v": 1, "type": "reveal", "eph_a": K64, "continuity_a": C64}
    obj.update(override)
    return obj


def canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(canon(reveal_obj(extra=1)), id="extra-field"),
        pytest.param(canon({k: v for k, v in reveal_obj().items() if k != "eph_a"}), id="missing"),
        pytest.param(canon(reveal_obj(eph_a=base64.b64encode(b"x" * 31).decode())), id="key-31"),
        pytest.param(canon(reveal_obj(eph_a=base64.b64encode(b"x" * 33).decode())), id="key-33"),
        pytest.param(canon(reveal_obj(eph_a="!" * 44)), id="not-base64"),
        pytest.param(canon(reveal_obj(eph_a=K64[:-2] + "B=")), id="non-canonical-base64"),
        pytest.param(canon(reveal_obj(eph_a=K64.rstrip("="))), id="unpadded-base64"),
        pytest.param(canon(reveal_obj(eph_a=[1, 2])), id="key-not-string"),
        pytest.param(canon(reveal_obj(continuity_a=K64)), id="continuity-32"),
        pytest.param(canon(reveal_obj(v=2)), id="version-2"),
        pytest.param(canon(reveal_obj(v=True)), id="version-true"),
        pytest.param(canon(reveal_obj(type="teleport")), id="unknown-type"),
        pytest.param(canon(reveal_obj(type=7)), id="type-not-string"),
        pytest.param(json.dumps(reveal_obj()).encode(), id="whitespace"),
        pytest.param(canon(reveal_obj())[:-1] + b',"v":1}', id="duplicate-key"),
        pytest.param(canon(reveal_obj()).replace(b"{", b"{ ", 1), id="leading-space"),
        pytest.param(canon([reveal_obj()]), id="array"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[" * 30_000, id="deep-brackets"),
        pytest.param(canon({"v": 1, "type": "accept", "x": None}), id="accept-with-field"),
        pytest.param(canon({"v": 1, "type": "error", "reason": "Bad Reason"}), id="bad-reason"),
        pytest.param(canon({"v": 1, "type": "error", "reason": "a" * 65}), id="long-reason"),
        pytest.param(canon({"v": 1, "type": "error", "reason": 5}), id="reason-not-string"),
        pytest.param(
            canon({"v": 1, "type": "offer", "commitment": K64, "description": [1]}),
            id="description-not-object",
        ),
        pytest.param(
            canon({"v": 1, "type": "offer", "commitment": K64, "description": {"a": nest(8)}}),
            id="description-too-deep",
        ),
        pytest.param(
            canon({"v": 1, "type": "offer", "commitment": K64, "description": {"a": "x" * 17_000}}),
            id="description-too-big",
        ),
        pytest.param(
            b'{"commitment":"' + K64.encode() + b'","description":{"a":NaN},"type":"offer","v":1}',
            id="nan",
        ),
        pytest.param(
            b'{"commitment":"'
            + K64.encode()
            + b'","description":{"a":"\\ud800"},"type":"offer","v":1}',
            id="lone-surrogate",
        ),
        pytest.param(
            canon({"v": 1, "type": "offer", "commitment": K64, "description": {"a": 2**60}}),
            id="int-too-big",
        ),
        pytest.param(
            b'{"commitment":"'
            + K64.encode()
            + b'","description":{"a":1.0e5},"type":"offer","v":1}',
            id="non-canonical-number",
        ),
        pytest.param(b" " * (m.MAX_MESSAGE_BYTES + 1), id="oversized"),
        pytest.param(canon({"v": 1, "type": "hold"}), id="hold-without-epoch"),
        pytest.param(canon({"v": 1, "type": "hold", "epoch": 0}), id="hold-epoch-0"),
        pytest.param(canon({"v": 1, "type": "resume", "epoch": -1}), id="resume-epoch-negative"),
        pytest.param(canon({"v": 1, "type": "hold", "epoch": 2**31}), id="hold-epoch-too-big"),
        pytest.param(canon({"v": 1, "type": "hold", "epoch": True}), id="hold-epoch-bool"),
        pytest.param(b'{"epoch":1.0,"type":"hold","v":1}', id="hold-epoch-float"),
        pytest.param(canon({"v": 1, "type": "hold", "epoch": "1"}), id="hold-epoch-string"),
    ],
)
def test_malformed_payloads_are_rejected(payload: bytes) -> None:
    with pytest.raises(BadCallMessage):
        m.decode(payload)


def test_depth_limit_is_exact() -> None:
    m.canonical_description({"a": nest(m.MAX_DESCRIPTION_DEPTH - 1)})
    with pytest.raises(BadCallMessage):
        m.canonical_description({"a": nest(m.MAX_DESCRIPTION_DEPTH)})


def test_constructors_refuse_what_decode_would_refuse() -> None:
    with pytest.raises(BadCallMessage):
        m.Offer(b"short", {})
    with pytest.raises(BadCallMessage):
        m.Reveal(bytearray(32), b"\x00" * 64)  # type: ignore[arg-type]
    with pytest.raises(BadCallMessage):
        m.CallError("")
    offer = m.Offer(b"\x00" * 32, {"ok": 1})
    offer.description["bad"] = float("inf")  # a dict stays mutable: encode checks again
    with pytest.raises(BadCallMessage):
        m.encode(offer)
