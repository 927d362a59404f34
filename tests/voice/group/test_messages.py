"""Group control messages: round trips, canonical form, strict rejection of everything else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.errors import BadGroupMessage, VoiceError
from voice.group import messages as gm

GROUP = bytes(range(16))
KEY = bytes(range(32))


def member(index: int, user: str | None = None) -> gm.Member:
    return gm.Member(user or f"user{index}", bytes([index]) * 32, index, bytes([index + 1]) * 32)


def roster(n: int = 3, epoch: int = 4) -> gm.Roster:
    members = tuple(member(i) for i in range(n))
    return gm.Roster(GROUP, epoch, members, "wss://sfu.example:8989/janus", 1234, "pin-AbCd1234")


EXAMPLES: list[gm.Message] = [
    gm.Invite(GROUP, "alice", "wss://sfu.example/janus", 2**53, "A" * 64),
    gm.Join(GROUP, KEY),
    gm.Decline(GROUP),
    roster(1),
    roster(8, epoch=gm.MAX_EPOCH),
    gm.Leave(GROUP, 0),
    gm.Leave(GROUP, 7),
    gm.Removed(GROUP, 3),
    gm.SenderKey(GROUP, 2, 255, gm.MAX_GENERATION, 0, KEY),
    gm.SenderKey(GROUP, 2, 7, 3, gm.MAX_STEP, KEY * 2),
    gm.Commit(GROUP, 1, 0, KEY),
    gm.Reveal(GROUP, 1, 3, KEY),
    gm.End(GROUP),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: m.TYPE)
def test_round_trip(msg: gm.Message) -> None:
    data = gm.encode(msg)
    assert gm.decode(data) == msg
    assert gm.encode(gm.decode(data)) == data
    obj = json.loads(data)
    assert obj["v"] == 1 and obj["type"] == msg.TYPE
    assert base64.b64decode(obj["group"]) == GROUP


def test_every_type_has_an_example() -> None:
    assert {m.TYPE for m in EXAMPLES} == set(gm.MESSAGE_TYPES)


groups = st.binary(min_size=16, max_size=16)
keys = st.binary(min_size=32, max_size=32)
epochs = st.integers(1, gm.MAX_EPOCH)
indexes = st.integers(0, gm.MAX_INDEX)


@st.composite
def rosters(draw: st.DrawFn) -> gm.Roster:
    idx = sorted(draw(st.sets(indexes, min_size=1, max_size=gm.MAX_MEMBERS)))
    users = draw(
        st.lists(
            st.from_regex(gm.USERNAME, fullmatch=True),
            min_size=len(idx),
            max_size=len(idx),
            unique=True,
        )
    )
    members = tuple(
        gm.Member(u, draw(keys), i, draw(keys)) for u, i in zip(users, idx, strict=True)
    )
    return gm.Roster(draw(groups), draw(epochs), members, "ws://127.0.0.1:8188", 1, "12345678")


messages = st.one_of(
    st.builds(gm.Join, groups, keys),
    st.builds(gm.Leave, groups, st.integers(0, gm.MAX_EPOCH)),
    st.builds(gm.Removed, groups, epochs),
    st.builds(
        gm.SenderKey,
        groups,
        epochs,
        indexes,
        st.integers(0, gm.MAX_GENERATION),
        st.just(0),
        keys,
    ),
    st.builds(
        gm.SenderKey,
        groups,
        epochs,
        indexes,
        st.integers(0, gm.MAX_GENERATION),
        st.integers(1, gm.MAX_STEP),
        st.binary(min_size=64, max_size=64),
    ),
    st.builds(gm.Commit, groups, epochs, indexes, keys),
    st.builds(gm.Reveal, groups, epochs, indexes, keys),
    st.builds(gm.End, groups),
    rosters(),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_round_trip_any(msg: gm.Message) -> None:
    assert gm.decode(gm.encode(msg)) == msg


def _mutate(msg: gm.Message, **changes: Any) -> bytes:
    """The canonical encoding of ``msg`` with fields replaced (None: removed)."""
    obj = json.loads(gm.encode(msg))
    for name, value in changes.items():
        if value is None:
            del obj[name]
        else:
            obj[name] = value
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _b64(n: int) -> str:
    return base64.b64encode(bytes(n)).decode()


def _entries(r: gm.Roster) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(gm.encode(r))["members"]
    return entries


BAD: dict[str, bytes] = {
    "not json": b"{nope",
    "not utf-8": b"\xff\xfe",
    "array": b"[]",
    "no version": _mutate(gm.End(GROUP), v=None),
    "version 2": _mutate(gm.End(GROUP), v=2),
    "version true": _mutate(gm.End(GROUP), v=True),
    "version 1.0": _mutate(gm.End(GROUP), v=1.0),
    "unknown type": _mutate(gm.End(GROUP), type="hello"),
    "type not a string": _mutate(gm.End(GROUP), type=5),
    "missing group": _mutate(gm.End(GROUP), group=None),
    "missing field": _mutate(gm.Join(GROUP, KEY), frame_key=None),
    "extra field": _mutate(gm.End(GROUP), epoch=1),
    "group 15 bytes": _mutate(gm.End(GROUP), group=_b64(15)),
    "group 17 bytes": _mutate(gm.End(GROUP), group=_b64(17)),
    "group not base64": _mutate(gm.End(GROUP), group="!!!!"),
    "group a number": _mutate(gm.End(GROUP), group=16),
    "key 31 bytes": _mutate(gm.Join(GROUP, KEY), frame_key=_b64(31)),
    "key base64url": _mutate(gm.Join(GROUP, b"\xfb" * 32), frame_key="-" * 43 + "="),
    "key unpadded": _mutate(gm.Join(GROUP, KEY), frame_key=_b64(32).rstrip("=")),
    "epoch 0": _mutate(gm.Removed(GROUP, 1), epoch=0),
    "epoch negative": _mutate(gm.Leave(GROUP, 1), epoch=-1),
    "epoch too big": _mutate(gm.Removed(GROUP, 1), epoch=2**31),
    "epoch a string": _mutate(gm.Removed(GROUP, 1), epoch="1"),
    "epoch a float": _mutate(gm.Removed(GROUP, 1), epoch=1.0),
    "epoch a bool": _mutate(gm.Removed(GROUP, 1), epoch=True),
    "index 256": _mutate(gm.Commit(GROUP, 1, 0, KEY), index=256),
    "index -1": _mutate(gm.Reveal(GROUP, 1, 0, KEY), index=-1),
    "generation 65536": _mutate(
        gm.SenderKey(GROUP, 1, 0, 0, 0, KEY), generation=gm.MAX_GENERATION + 1
    ),
    "step 2**32": _mutate(gm.SenderKey(GROUP, 1, 0, 0, 1, KEY * 2), step=2**32),
    "step 0 with a 64-byte key": _mutate(gm.SenderKey(GROUP, 1, 0, 0, 1, KEY * 2), step=0),
    "step 1 with a 32-byte key": _mutate(gm.SenderKey(GROUP, 1, 0, 0, 0, KEY), step=1),
    "room 0": _mutate(EXAMPLES[0], room=0),
    "room too big": _mutate(EXAMPLES[0], room=2**53 + 1),
    "pin short": _mutate(EXAMPLES[0], pin="1234567"),
    "pin with space": _mutate(EXAMPLES[0], pin="1234 5678"),
    "url http": _mutate(EXAMPLES[0], sfu_url="https://sfu.example/janus"),
    "url without host": _mutate(EXAMPLES[0], sfu_url="wss:///janus"),
    "url with space": _mutate(EXAMPLES[0], sfu_url="wss://sfu.example/ja nus"),
    "url too long": _mutate(EXAMPLES[0], sfu_url="wss://" + "a" * 251),
    "creator bad name": _mutate(EXAMPLES[0], creator="Alice"),
    "creator too short": _mutate(EXAMPLES[0], creator="al"),
    "no members": _mutate(roster(), members=[]),
    "members not a list": _mutate(roster(), members={}),
    "9 members": _mutate(roster(), members=[*_entries(roster(8)), _entries(roster(1))[0]]),
    "duplicate user": _mutate(
        roster(), members=[*_entries(roster(2)), {**_entries(roster(3))[2], "user": "user0"}]
    ),
    "duplicate index": _mutate(roster(), members=[_entries(roster(2))[0]] * 2),
    "members out of order": _mutate(roster(), members=_entries(roster(3))[::-1]),
    "entry extra field": _mutate(roster(), members=[{**_entries(roster(1))[0], "x": 1}]),
    "entry missing field": _mutate(
        roster(), members=[{k: v for k, v in _entries(roster(1))[0].items() if k != "index"}]
    ),
    "entry index 256": _mutate(roster(), members=[{**_entries(roster(1))[0], "index": 256}]),
    "entry short key": _mutate(
        roster(), members=[{**_entries(roster(1))[0], "identity_key": _b64(31)}]
    ),
    "entry not an object": _mutate(roster(), members=["user0"]),
    "not canonical (spaces)": gm.encode(gm.End(GROUP)).replace(b",", b", "),
    "not canonical (order)": json.dumps(
        {"v": 1, "type": "end", "group": _b64(16)}, separators=(",", ":")
    ).encode(),
    "not canonical (escaped)": gm.encode(gm.End(GROUP)).replace(b'"end"', b'"\\u0065nd"'),
    "duplicate key": gm.encode(gm.End(GROUP)).replace(b'{"group"', b'{"v":1,"group"'),
    "NaN": b'{"epoch":NaN,"group":"' + _b64(16).encode() + b'","type":"removed","v":1}',
    "oversized": b" " * (gm.MAX_MESSAGE_BYTES + 1),
    "deeply nested": b"[" * 8_000,
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(BadGroupMessage):
        gm.decode(data)


def test_bad_group_message_is_a_voice_error_and_a_value_error() -> None:
    assert issubclass(BadGroupMessage, VoiceError) and issubclass(BadGroupMessage, ValueError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: gm.Member("user0", KEY, 256, KEY),
        lambda: gm.Member("user0", KEY[:31], 0, KEY),
        lambda: gm.Roster(GROUP, 1, (), "ws://h", 1, "12345678"),
        lambda: gm.Roster(GROUP, 1, tuple(member(i) for i in range(9)), "ws://h", 1, "12345678"),
        lambda: gm.Roster(GROUP, 1, (member(0), member(1, "user0")), "ws://h", 1, "12345678"),
        lambda: gm.Roster(GROUP, 1, [member(0)], "ws://h", 1, "12345678"),  # type: ignore[arg-type]
        lambda: gm.Join(GROUP[:15], KEY),
        lambda: gm.Leave(GROUP, -1),
        lambda: gm.SenderKey(GROUP, 1, 0, -1, 0, KEY),
    ],
)
def test_bad_values_are_refused_when_built(build: Any) -> None:
    with pytest.raises(BadGroupMessage):
        build()


def test_encode_refuses_what_is_not_a_group_message() -> None:
    with pytest.raises(BadGroupMessage):
        gm.encode(gm.Member("user0", KEY, 0, KEY))  # type: ignore[arg-type]


def test_a_full_roster_fits_well_under_the_cap() -> None:
    big = gm.Roster(
        GROUP,
        gm.MAX_EPOCH,
        tuple(member(i * 30, "u" * 32 if i == 0 else f"user{i}" + "x" * 26) for i in range(8)),
        "wss://" + "a" * 250,
        gm.MAX_ROOM,
        "p" * 64,
    )
    assert len(gm.encode(big)) < gm.MAX_MESSAGE_BYTES // 2


def test_sender_key_repr_hides_the_key() -> None:
    assert KEY.hex() not in repr(gm.SenderKey(GROUP, 1, 0, 0, 0, KEY))
    assert repr(KEY) not in repr(gm.SenderKey(GROUP, 1, 0, 0, 0, KEY))


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from([_b64(16), _b64(32), "alice", "wss://h", "12345678"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
field_names = st.sampled_from(
    ["v", "type", "group", "epoch", "index", "members", "key", "frame_key", "user", "room"]
)
message_like = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 2, "1", True]), "type": st.sampled_from([*gm.MESSAGE_TYPES, "x"])},
    optional={"group": st.sampled_from([_b64(16), _b64(15), 1])},
).flatmap(lambda base: st.dictionaries(field_names, json_value).map(lambda d: {**d, **base}))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=600), json_value, message_like))
def test_fuzz_decode_raises_only_bad_group_message(value: Any) -> None:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    try:
        msg = gm.decode(data)
    except BadGroupMessage:
        return
    assert gm.encode(msg) == data  # whatever passes is canonical and valid


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_fuzz_flipped_byte_raises_only_bad_group_message(msg: gm.Message, data: Any) -> None:
    encoded = bytearray(gm.encode(msg))
    at = data.draw(st.integers(0, len(encoded) - 1))
    encoded[at] ^= data.draw(st.integers(1, 255))
    try:
        other = gm.decode(bytes(encoded))
    except BadGroupMessage:
        return
    assert other != msg and gm.encode(other) == bytes(encoded)  # another valid message
