"""STUN and TURN servers for a call, from the short-lived credentials the server hands out.

The server's ``turn_credentials`` reply carries one username/password (coturn REST-API format,
``"<expiry>:<user>"``) and a list of URIs: ``stun:`` (RFC 7064), ``turn:`` and ``turns:``
(RFC 7065). :func:`parse_ice_uris` turns every usable one into an
:class:`~voice.media.iceservers.IceServers`; anything else is skipped with a log line.

:class:`IceServerCache` keeps a phone's credentials until half their lifetime is gone, so a
``listen`` phone answering many calls does not spend the server's TURN allowance; then it asks
again (and, if that fails, keeps using the old ones until they expire).

:func:`relay_only_for` is the relay policy (``PhoneConfig.relay``, docs/media.md).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from voice.errors import RequestRefused, TurnUnavailable
from voice.media.iceservers import (
    DEFAULT_STUN_PORT,
    DEFAULT_TURNS_PORT,
    IceServers,
    StunServer,
    TurnServer,
)
from voice.net.client import SignalingClient
from voice.phone.config import PhoneConfig, RelayPolicy

__all__ = [
    "NO_RELAY_WARNING",
    "IceServerCache",
    "apply_relay_policy",
    "parse_ice_uri",
    "parse_ice_uris",
    "relay_only_for",
    "server_on_loopback",
]

log = logging.getLogger("voice.phone")

NO_RELAY_WARNING = "no relay offered: the peer can see your addresses"
UNAVAILABLE_RETRY = 300.0  # seconds before asking a server that had no TURN again

_URI = re.compile(
    r"(?P<scheme>stun|turns?):(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+)"
    r"(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?"
)


def parse_ice_uri(uri: str, username: str, password: str) -> StunServer | TurnServer:
    """One ``stun:``, ``turn:`` or ``turns:`` URI (RFC 7064 / 7065); ValueError if unusable.

    ``turn:host[:port][?transport=udp|tcp]`` (port 3478, UDP by default),
    ``turns:host[:port][?transport=tcp]`` (port 5349; TLS over TCP, DTLS is not supported),
    ``stun:host[:port]`` (port 3478; no query).
    """
    m = _URI.fullmatch(uri)
    if m is None:
        raise ValueError("not a stun:, turn: or turns: URI")
    scheme, transport = m["scheme"], m["transport"]
    host = str(m["host"])
    if host.startswith("["):
        host = host[1:-1]
        if ipaddress.ip_address(host).version != 6:  # ValueError too if not an address
            raise ValueError("only an IPv6 address goes in brackets")
    default = DEFAULT_TURNS_PORT if scheme == "turns" else DEFAULT_STUN_PORT
    port = int(m["port"]) if m["port"] is not None else default
    if scheme == "stun":
        if transport is not None:
            raise ValueError("a stun: URI takes no transport")
        return StunServer(host, port)
    if scheme == "turns":
        if transport == "udp":
            raise ValueError("turns: over UDP (DTLS) is not supported")
        return TurnServer(host, port, username, password, "tcp", tls=True)
    return TurnServer(host, port, username, password, "tcp" if transport == "tcp" else "udp")


def parse_ice_uris(uris: Sequence[str], username: str, password: str) -> IceServers:
    """Every usable URI as STUN or TURN servers (duplicates once); the rest is logged and
    skipped (the URI only: it carries no credentials)."""
    stun: list[StunServer] = []
    turn: list[TurnServer] = []
    for uri in uris:
        try:
            server = parse_ice_uri(uri, username, password)
        except ValueError as exc:
            log.warning("ignoring ICE server URI %r: %s", uri[:100], exc)
            continue
        if isinstance(server, StunServer):
            stun.append(server)
        else:
            turn.append(server)
    return IceServers(stun=tuple(dict.fromkeys(stun)), turn=tuple(dict.fromkeys(turn)))


def server_on_loopback(server_url: str) -> bool:
    """Whether the signaling server is on this machine (then ICE also gathers on 127.0.0.1)."""
    host = urlsplit(server_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def apply_relay_policy(
    policy: RelayPolicy, servers: IceServers, *, verified_peer: bool
) -> tuple[IceServers, bool]:
    """The ICE servers a call may use and whether it is relay-only (:func:`relay_only_for`);
    ``never`` drops the TURN servers: no relay candidate at all, only host and STUN."""
    relay_only = relay_only_for(policy, servers, verified_peer=verified_peer)
    if policy == "never":
        servers = dataclasses.replace(servers, turn=())
    return servers, relay_only


def relay_only_for(policy: RelayPolicy, servers: IceServers, *, verified_peer: bool) -> bool:
    """Whether this call's media must go through a relay only.

    ``always``: yes, and TurnUnavailable when the server offers no TURN. ``never``: no.
    ``auto``: yes unless the peer is a VERIFIED contact; with no TURN offered the call goes
    direct with a warning (:data:`NO_RELAY_WARNING`).
    """
    if policy == "never":
        return False
    if policy == "always":
        if not servers.has_relay:
            raise TurnUnavailable(
                "--relay always, but the server offers no TURN relay", code="turn_unavailable"
            )
        return True
    if verified_peer:
        return False
    if not servers.has_relay:
        log.warning(NO_RELAY_WARNING)
        return False
    return True


@dataclass(frozen=True)
class _Cached:
    servers: IceServers
    refresh_at: float  # wall clock: ask again from then on (half the lifetime)
    expires_at: float  # wall clock: unusable from then on


class IceServerCache:
    """A phone's ICE servers and their credentials, reused until half their lifetime."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cached: _Cached | None = None
        self.requests = 0  # turn_credentials requests sent (tests)

    async def get(self, client: SignalingClient, cfg: PhoneConfig) -> IceServers:
        """The ICE servers for the next call; empty if the server offers none.

        A refused or unanswered request falls back to unexpired credentials, else none
        (the relay policy then decides whether the call may go on).
        """
        now = self._clock()
        cached = self._cached
        if cached is not None and now < cached.refresh_at:
            return cached.servers
        self.requests += 1
        try:
            creds = await client.turn_credentials(reply_timeout=cfg.request_timeout)
        except TurnUnavailable:
            servers = IceServers()
            self._cached = _Cached(servers, now + UNAVAILABLE_RETRY, now + UNAVAILABLE_RETRY)
            return servers
        except (RequestRefused, TimeoutError) as exc:
            if cached is not None and now < cached.expires_at:
                return cached.servers
            log.warning("no ICE servers from the signaling server (%s)", type(exc).__name__)
            return IceServers()
        servers = parse_ice_uris(creds.uris, creds.username, creds.password)
        expires = _expiry(creds.username, now + creds.ttl)
        self._cached = _Cached(servers, expires - creds.ttl / 2, expires)
        return servers


def _expiry(username: str, fallback: float) -> float:
    """The expiry time in a coturn REST-API username (``"<expiry>:<user>"``)."""
    head, sep, _ = username.partition(":")
    if sep and head.isdigit():
        return min(float(head), fallback)
    return fallback
