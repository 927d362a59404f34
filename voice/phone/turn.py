"""TURN relays for a call, from the short-lived credentials the signaling server hands out."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from voice.errors import TurnUnavailable
from voice.media.ice import TurnServer
from voice.net.client import SignalingClient
from voice.phone.config import PhoneConfig

__all__ = ["relay_for", "turn_server_from"]

log = logging.getLogger("voice.phone")

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


async def relay_for(client: SignalingClient, cfg: PhoneConfig) -> TurnServer | None:
    """Fresh TURN credentials for one call; None (host candidates only) if the server has no
    relay, unless the call must be relayed (TurnUnavailable)."""
    try:
        creds = await client.turn_credentials(reply_timeout=cfg.request_timeout)
    except TurnUnavailable:
        if cfg.relay_only:
            raise
        log.warning("no TURN relay available; using host candidates only")
        return None
    return turn_server_from(creds.uris, creds.username, creds.password)
