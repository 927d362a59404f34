"""signaling.config: the STUN/TURN URIs handed out with TURN credentials are checked at start."""

from __future__ import annotations

import pytest

from signaling.config import Config, check_ice_uri
from signaling.errors import ConfigError


@pytest.mark.parametrize(
    "uri",
    [
        "stun:stun.example.org",
        "stun:203.0.113.1:19302",
        "turn:turn.example.org",
        "turn:127.0.0.1:3478?transport=udp",
        "turn:[2001:db8::1]:3478?transport=tcp",
        "turns:turn.example.org",
        "turns:turn.example.org:443?transport=tcp",
    ],
)
def test_good_uris(uri: str) -> None:
    check_ice_uri(uri)
    assert Config(turn_secret="s", turn_uris=(uri,)).turn is not None


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "turn.example.org",
        "http://turn.example.org",
        "turn:turn.example.org:0",
        "turn:turn.example.org:65536",
        "turn:turn.example.org?transport=sctp",
        "turns:turn.example.org?transport=udp",
        "stun:stun.example.org?transport=udp",
        "turn:[127.0.0.1]",
        "turn:300.1.1.1",
        "turn:user:pw@turn.example.org",
        "turn:-bad-.example.org",
    ],
)
def test_bad_uris_refuse_to_start(uri: str) -> None:
    with pytest.raises(ConfigError, match="turn_uris"):
        Config(turn_secret="s", turn_uris=(uri,))


def test_at_most_what_a_reply_carries() -> None:
    with pytest.raises(ConfigError, match="at most 16"):
        Config(turn_secret="s", turn_uris=tuple(f"turn:h{i}.test" for i in range(17)))
