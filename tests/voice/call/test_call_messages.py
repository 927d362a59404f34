"""Call message wire format: round trips, canonical form, and strict rejection."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.config import Config
from voice.call import messages as m
from voice.crypto.envelope import ENVELOPE_OVERHEAD
from voice.crypto.kem import CIPHERTEXT_BYTES, ENCAPSULATION_KEY_BYTES
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
version_lists = st.lists(st.integers(1, 255), min_size=1, max_size=8, unique=True).map(
    lambda vs: tuple(sorted(vs))
)
EK = b"\x05" * ENCAPSULATION_KEY_BYTES
CT = b"\x06" * CIPHERTEXT_BYTES


@st.composite
def negotiated_offers(draw: st.DrawFn) -> m.Offer:
    versions = draw(version_lists)
    ek = EK if 2 in versions else b""
    return m.Offer(draw(keys), draw(descriptions), versions, ek)


@st.composite
def negotiated_ringings(draw: st.DrawFn) -> m.Ringing:
    versions = draw(version_lists)
    version = draw(st.sampled_from(versions))
    ct = CT if version == 2 else b""
    return m.Ringing(draw(keys), draw(continuity), draw(descriptions), versions, version, ct)


messages = st.one_of(
    st.builds(m.Offer, keys, descriptions),  # the form from before version 2
    st.builds(m.Ringing, keys, continuity, descriptions),
    negotiated_offers(),
    negotiated_ringings(),
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


EK64 = base64.b64encode(EK).decode()
CT64 = base64.b64encode(CT).decode()


def offer_obj(**override: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"v": 1, "type": "offer", "commitment": K64, "description": {}}
    obj.update(versions=[2], mlkem_ek=EK64)
    obj.update(override)
    return obj


def ringing_obj(**override: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"v": 1, "type": "ringing", "eph_b": K64, "continuity_b": C64}
    obj.update(description={}, versions=[2], version=2, mlkem_ct=CT64)
    obj.update(override)
    return obj


def test_the_negotiated_forms_decode_as_documented() -> None:
    offer = m.decode(canon(offer_obj(versions=[1, 2, 7])))
    assert isinstance(offer, m.Offer)
    assert offer.versions == (1, 2, 7) and offer.mlkem_ek == EK
    ringing = m.decode(canon(ringing_obj(versions=[1], version=1, mlkem_ct="")))
    assert isinstance(ringing, m.Ringing)
    assert (ringing.versions, ringing.version, ringing.mlkem_ct) == ((1,), 1, b"")
    legacy = m.decode(canon({"v": 1, "type": "offer", "commitment": K64, "description": {}}))
    assert isinstance(legacy, m.Offer) and legacy.versions == () and legacy.mlkem_ek == b""


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(offer_obj(versions=[]), id="offer-versions-empty"),
        pytest.param(offer_obj(versions=[2, 1]), id="offer-versions-unsorted"),
        pytest.param(offer_obj(versions=[2, 2]), id="offer-versions-repeated"),
        pytest.param(offer_obj(versions=[0, 2]), id="offer-version-0"),
        pytest.param(offer_obj(versions=[2, 256]), id="offer-version-256"),
        pytest.param(offer_obj(versions=[True]), id="offer-version-bool"),
        pytest.param(offer_obj(versions=["2"]), id="offer-version-string"),
        pytest.param(offer_obj(versions=list(range(1, 10))), id="offer-nine-versions"),
        pytest.param(offer_obj(versions=2), id="offer-versions-not-list"),
        pytest.param(offer_obj(mlkem_ek=""), id="offer-v2-without-key"),
        pytest.param(offer_obj(versions=[1], mlkem_ek=EK64), id="offer-v1-with-key"),
        pytest.param(offer_obj(mlkem_ek=EK64[:-4]), id="offer-key-short"),
        pytest.param(offer_obj(mlkem_ek=5), id="offer-key-not-string"),
        pytest.param({k: v for k, v in offer_obj().items() if k != "mlkem_ek"}, id="offer-no-key"),
        pytest.param({k: v for k, v in offer_obj().items() if k != "versions"}, id="offer-no-list"),
        pytest.param(ringing_obj(version=1), id="ringing-version-not-listed"),
        pytest.param(ringing_obj(version=None), id="ringing-version-null"),
        pytest.param(ringing_obj(version=True, versions=[1]), id="ringing-version-bool"),
        pytest.param(ringing_obj(mlkem_ct=""), id="ringing-v2-without-ciphertext"),
        pytest.param(
            ringing_obj(versions=[1], version=1, mlkem_ct=CT64), id="ringing-v1-with-ciphertext"
        ),
        pytest.param(ringing_obj(mlkem_ct=CT64[:-4]), id="ringing-ciphertext-short"),
        pytest.param(
            {k: v for k, v in ringing_obj().items() if k != "version"}, id="ringing-no-choice"
        ),
    ],
)
def test_malformed_negotiation_fields_are_rejected(obj: dict[str, Any]) -> None:
    with pytest.raises(BadCallMessage):
        m.decode(canon(obj))


def test_the_largest_offer_fits_the_message_and_server_limits() -> None:
    """A version-2 offer with a description of the largest size allowed: the ML-KEM key adds
    1.6 KB of base64, and the sealed envelope still fits the server's body and frame limits."""
    big = {"a": "x" * (m.MAX_DESCRIPTION_BYTES - len('{"a":""}'))}
    assert len(m.canonical_description(big)) == m.MAX_DESCRIPTION_BYTES
    offer = m.encode(m.Offer(b"\x01" * 32, big, (2,), EK))
    legacy = m.encode(m.Offer(b"\x01" * 32, big))
    assert len(offer) - len(legacy) == len(',"mlkem_ek":"","versions":[2]') + len(EK64)
    config = Config()
    body = bytes(len(offer) + ENVELOPE_OVERHEAD)
    assert len(body) <= config.max_body_bytes
    send = {"v": 1, "type": "send", "id": "i" * 64, "to": "u" * 32}
    frame = json.dumps({**send, "body": base64.b64encode(body).decode()}).encode()
    assert len(frame) <= config.max_frame_bytes


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
