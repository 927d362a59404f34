"""The media description two peers exchange (inside end-to-end encrypted call messages).

It replaces SDP with a small JSON object; every field is checked here, in one place::

    {
      "ice":   {"ufrag": "<4-256 ice-chars>", "pwd": "<22-256 ice-chars>",
                "candidates": ["<Candidate.to_sdp()>", ...]},          # 1..32, UDP, component 1
      "ssrc":  <0..2**32-1>,                                             # the sender's RTP SSRC
      "codec": {"name": "opus", "clock_rate": 48000, "channels": 1, "payload_type": 111,
                "fmtp": "minptime=20;useinbandfec=1;stereo=0;cbr=1;maxaveragebitrate=64000"}
    }

Unknown keys, wrong types, a codec other than Opus/48000/1 on payload type 111, or an fmtp
without ``useinbandfec=1`` are refused with :class:`~voice.errors.BadDescription`. The
description is hashed into the call transcript by the key agreement, so a peer that sees a
swapped description also sees a different SAS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aioice import Candidate

from voice.errors import BadDescription
from voice.media.ice import MAX_REMOTE_CANDIDATES, check_credentials, parse_candidate

CODEC_NAME = "opus"
CLOCK_RATE = 48_000
CHANNELS = 1
PAYLOAD_TYPE = 111
_FMTP_PARAM = re.compile(r"^[a-z0-9-]{1,32}=[A-Za-z0-9.-]{1,32}$")


def codec_fmtp(bitrate: int) -> str:
    """The fmtp line we announce for our own (CBR, FEC, mono) Opus stream."""
    return f"minptime=20;useinbandfec=1;stereo=0;cbr=1;maxaveragebitrate={bitrate}"


def codec_description(bitrate: int) -> dict[str, Any]:
    return {
        "name": CODEC_NAME,
        "clock_rate": CLOCK_RATE,
        "channels": CHANNELS,
        "payload_type": PAYLOAD_TYPE,
        "fmtp": codec_fmtp(bitrate),
    }


@dataclass(frozen=True)
class RemoteDescription:
    """A validated peer description."""

    ufrag: str
    pwd: str
    candidates: tuple[Candidate, ...]
    ssrc: int
    fmtp: dict[str, str]


def _exact_keys(obj: object, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BadDescription(f"{where} must be an object")
    missing = keys - obj.keys()
    extra = obj.keys() - keys
    if missing:
        raise BadDescription(f"{where} lacks {', '.join(sorted(missing))}")
    if extra:
        raise BadDescription(f"{where} has unknown field(s) {', '.join(sorted(map(str, extra)))}")
    return obj


def _int_field(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadDescription(f"{where}.{key} must be an integer")
    return value


def parse_fmtp(fmtp: object) -> dict[str, str]:
    """``k=v;k=v`` into a dict; strict about characters, length and duplicates."""
    if not isinstance(fmtp, str) or len(fmtp) > 256:
        raise BadDescription("codec.fmtp must be a string of at most 256 characters")
    params: dict[str, str] = {}
    for part in fmtp.split(";"):
        part = part.strip()
        if not _FMTP_PARAM.match(part):
            raise BadDescription(f"codec.fmtp has a malformed parameter {part[:40]!r}")
        key, value = part.split("=", 1)
        if key in params:
            raise BadDescription(f"codec.fmtp repeats {key!r}")
        params[key] = value
    return params


def parse_description(remote: object) -> RemoteDescription:
    """Validate a peer's description; raise BadDescription saying what is wrong."""
    top = _exact_keys(remote, "description", {"ice", "ssrc", "codec"})
    ice = _exact_keys(top["ice"], "ice", {"ufrag", "pwd", "candidates"})
    ufrag, pwd = check_credentials(ice["ufrag"], ice["pwd"])
    raw = ice["candidates"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_REMOTE_CANDIDATES:
        raise BadDescription(f"ice.candidates must be a list of 1-{MAX_REMOTE_CANDIDATES}")
    candidates = tuple(parse_candidate(text) for text in raw)

    ssrc = _int_field(top, "ssrc", "description")
    if not 0 <= ssrc < 2**32:
        raise BadDescription("ssrc must be a 32-bit unsigned integer")

    codec = _exact_keys(
        top["codec"], "codec", {"name", "clock_rate", "channels", "payload_type", "fmtp"}
    )
    if codec["name"] != CODEC_NAME:
        raise BadDescription(f"codec.name must be {CODEC_NAME!r}")
    for key, expected in (
        ("clock_rate", CLOCK_RATE),
        ("channels", CHANNELS),
        ("payload_type", PAYLOAD_TYPE),
    ):
        if _int_field(codec, key, "codec") != expected:
            raise BadDescription(f"codec.{key} must be {expected}")
    fmtp = parse_fmtp(codec["fmtp"])
    if fmtp.get("useinbandfec") != "1":
        raise BadDescription("codec.fmtp must have useinbandfec=1")
    return RemoteDescription(ufrag=ufrag, pwd=pwd, candidates=candidates, ssrc=ssrc, fmtp=fmtp)
