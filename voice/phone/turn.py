"""TURN relays for a call, from the short-lived credentials the signaling server hands out."""

from __future__ import annotations

import re
from collections.abc import Sequence

from voice.media.ice import TurnServer

__all__ = ["turn_server_from"]

_TURN_URI = re.compile(
    r"turn:(?P<host>\[[0-9a-fA-F:.]+\]|[^:?\[\]]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)


def turn_server_from(uris: Sequence[str], username: str, password: str) -> TurnServer | None:
    """The first usable ``turn:`` URI (RFC 7065) as a TurnServer; None if there is none."""
    for uri in uris:
        m = _TURN_URI.fullmatch(uri)
        if m is None:
            continue
        port = int(m["port"] or 3478)
        if not 0 < port < 65536:
            continue
        host = str(m["host"]).strip("[]")
        if m["transport"] == "tcp":
            return TurnServer(host, port, username, password, "tcp")
        return TurnServer(host, port, username, password, "udp")
    return None
