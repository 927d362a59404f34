"""The STUN and TURN servers of a call, and the local addresses ICE gathers on.

Configuration only: :class:`IceServers` (what the signaling server hands out, see
:mod:`voice.phone.turn`), checked when built; :func:`interface_addresses` (this machine's
usable addresses) and :func:`turn_tls_context` (how a ``turns:`` server is verified).
:mod:`voice.media.ice` gathers and connects with them, and re-exports the public names.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import ifaddr

from voice.errors import MediaError

MAX_HOST_ADDRESSES = 10  # so host + srflx + relay candidates stay within ice.MAX_REMOTE_CANDIDATES
DEFAULT_STUN_PORT = 3478
DEFAULT_TURNS_PORT = 5349

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)

RelayTransport = Literal["udp", "tcp", "tls"]


def _check_server_address(host: str, port: int, what: str) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"bad {what} port {port}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.match(host):
            raise ValueError(f"bad {what} host {host!r}") from None


@dataclass(frozen=True)
class StunServer:
    """A STUN server (RFC 7064 ``stun:host[:port]``): only asked for our public address."""

    host: str
    port: int = DEFAULT_STUN_PORT

    def __post_init__(self) -> None:
        _check_server_address(self.host, self.port, "STUN")

    @property
    def uri(self) -> str:
        return f"stun:{_uri_host(self.host)}:{self.port}"


@dataclass(frozen=True)
class TurnServer:
    """A TURN server and its (short-lived) credentials, as issued by the signaling server.

    ``transport`` is how we reach the server (``udp`` or ``tcp``); ``tls`` wraps the TCP
    connection in TLS (``turns:``), checked against the system CAs or ``IceServers.ca_file``.
    The relayed side is always UDP. The password is never shown by ``repr``.
    """

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    transport: Literal["udp", "tcp"] = "udp"
    tls: bool = False

    def __post_init__(self) -> None:
        _check_server_address(self.host, self.port, "TURN")
        if self.transport not in ("udp", "tcp"):
            raise ValueError(f"TURN transport must be 'udp' or 'tcp', not {self.transport!r}")
        if self.tls and self.transport != "tcp":
            raise ValueError("TURN over TLS runs over TCP")

    @property
    def relay_transport(self) -> RelayTransport:
        """How we reach the relay: udp, tcp or tls."""
        return "tls" if self.tls else self.transport

    @property
    def uri(self) -> str:
        """The server's RFC 7065 URI (no credentials)."""
        if self.tls:
            return f"turns:{_uri_host(self.host)}:{self.port}"
        return f"turn:{_uri_host(self.host)}:{self.port}?transport={self.transport}"

    def __repr__(self) -> str:  # never show the password
        return f"TurnServer({self.uri!r}, username={self.username!r}, ...)"


@dataclass(frozen=True)
class IceServers:
    """The STUN and TURN servers of a call (the signaling server hands them out).

    ``ca_file``: PEM CAs that verify ``turns:`` servers (None: the system CAs), like the phone's
    ``ca_file`` for wss.
    """

    stun: tuple[StunServer, ...] = ()
    turn: tuple[TurnServer, ...] = ()
    ca_file: Path | None = None

    @property
    def has_relay(self) -> bool:
        return bool(self.turn)


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def interface_addresses(*, include_loopback: bool = False) -> list[str]:
    """The addresses of every usable interface: IPv4 and global IPv6, first IPv4.

    Link-local (169.254/16, fe80::/10), loopback (unless asked: then 127.0.0.1 only) and
    unspecified addresses are skipped; at most :data:`MAX_HOST_ADDRESSES`.
    """
    v4: list[str] = []
    v6: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if address.is_loopback or address.is_link_local or address.is_unspecified:
                continue
            if address.is_multicast:
                continue
            (v4 if address.version == 4 else v6).append(str(address))
    addresses = list(dict.fromkeys(v4 + v6))
    if include_loopback:
        addresses.insert(0, "127.0.0.1")
    return addresses[:MAX_HOST_ADDRESSES]


@functools.lru_cache(maxsize=8)
def turn_tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Verifies a ``turns:`` server: its certificate chain (system CAs, or ``ca_file`` only)
    and its host name; TLS 1.2 or later."""
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except OSError as exc:
        raise MediaError(f"cannot use {ca_file} as PEM CAs for TURN over TLS: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
