"""voice.media.description: the JSON media description, validated strictly."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from voice.errors import BadDescription
from voice.media.description import codec_description, parse_description

GOOD: dict[str, Any] = {
    "ice": {
        "ufrag": "Ab3+",
        "pwd": "abcdefghijklmnopqrstuv",
        "candidates": ["f00 1 udp 2130706431 127.0.0.1 40000 typ host"],
    },
    "ssrc": 123456789,
    "codec": codec_description(64_000),
}


def test_good_description_parses() -> None:
    parsed = parse_description(json.loads(json.dumps(GOOD)))
    assert parsed.ssrc == 123456789
    assert parsed.ufrag == "Ab3+"
    assert [(c.host, c.port) for c in parsed.candidates] == [("127.0.0.1", 40000)]
    assert parsed.fmtp["useinbandfec"] == "1"
    assert parsed.fmtp["cbr"] == "1"


def mutate(path: str, value: Any) -> dict[str, Any]:
    desc = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node = desc
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[leaf]
    else:
        node[leaf] = value
    return desc


BAD = [
    ("ssrc", KeyError, "lacks ssrc"),
    ("ssrc", "1", "integer"),
    ("ssrc", True, "integer"),
    ("ssrc", -1, "32-bit"),
    ("ssrc", 2**32, "32-bit"),
    ("extra", 1, "unknown"),
    ("ice", [], "object"),
    ("ice.ufrag", "a", "ufrag"),
    ("ice.pwd", "short", "pwd"),
    ("ice.candidates", [], "candidates"),
    ("ice.candidates", "f00 1 udp 1 127.0.0.1 4 typ host", "candidates"),
    ("ice.candidates", ["f00 1 udp 1 127.0.0.1 4 typ host"] * 33, "candidates"),
    ("ice.candidates", ["garbage"], "candidate"),
    ("ice.candidates", ["f00 1 udp 1 peer.local 4 typ host"], "candidate"),
    ("ice.trickle", True, "unknown"),
    ("codec.name", "PCMU", "opus"),
    ("codec.clock_rate", 8000, "48000"),
    ("codec.channels", 2, "channels"),
    ("codec.payload_type", 0, "111"),
    ("codec.payload_type", 111.0, "integer"),
    ("codec.fmtp", "minptime=20;cbr=1", "useinbandfec"),
    ("codec.fmtp", "useinbandfec=0", "useinbandfec"),
    ("codec.fmtp", "useinbandfec=1;useinbandfec=1", "repeats"),
    ("codec.fmtp", "useinbandfec=1;;", "malformed"),
    ("codec.fmtp", "useinbandfec=1;x=" + "9" * 300, "256"),
    ("codec.fmtp", None, "string"),
    ("codec.profile", "x", "unknown"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD)
def test_malformed_descriptions_are_refused_clearly(path: str, value: Any, message: str) -> None:
    with pytest.raises(BadDescription, match=message):
        parse_description(mutate(path, value))


@pytest.mark.parametrize("junk", [None, [], "{}", 5, {}])
def test_non_descriptions_are_refused(junk: object) -> None:
    with pytest.raises(BadDescription):
        parse_description(junk)
