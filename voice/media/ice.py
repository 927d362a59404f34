"""ICE for the media path: an aioice ``Connection`` on configured host addresses, optional TURN.

aioice (aiortc's own ICE library) gathers host candidates on every interface address *except*
127.0.0.1, but our tests and demo run on loopback only. So we gather on explicitly configured
addresses with the public ``Connection.get_component_candidates()`` and install the result with
:func:`_install_local_candidates`, the one place that touches aioice private fields (pinned to
aioice 0.13.0; ``tests/voice/media/test_ice_media.py`` fails loudly if that changes).

Candidates travel inside the (end-to-end encrypted) call messages as their SDP attribute text,
``Candidate.to_sdp()``; :func:`parse_candidate` checks each one strictly before aioice sees it.
Only one component (RTP and RTCP multiplexed, RFC 5761) and UDP are used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aioice
from aioice import Candidate, Connection, TransportPolicy

from voice.errors import BadDescription, IceFailed, MediaError

PINNED_AIOICE = "0.13.0"
COMPONENT = 1
MAX_REMOTE_CANDIDATES = 32
DEFAULT_CONNECT_TIMEOUT = 10.0

_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
_CANDIDATE_TYPES = frozenset({"host", "srflx", "relay"})


@dataclass(frozen=True)
class TurnServer:
    """A TURN server and its (short-lived) credentials, as issued by the signaling server."""

    host: str
    port: int
    username: str
    password: str
    transport: Literal["udp", "tcp"] = "udp"

    def __post_init__(self) -> None:
        if not self.host or not 0 < self.port < 65536:
            raise ValueError(f"bad TURN server address {self.host!r}:{self.port}")
        if self.transport not in ("udp", "tcp"):
            raise ValueError(f"TURN transport must be 'udp' or 'tcp', not {self.transport!r}")

    def __repr__(self) -> str:  # never show the password
        return f"TurnServer({self.host!r}, {self.port}, username={self.username!r}, ...)"


def make_connection(
    *, controlling: bool, turn: TurnServer | None = None, relay_only: bool = False
) -> Connection:
    """Create (but do not gather) an ICE connection with one component."""
    if relay_only and turn is None:
        raise MediaError("relay_only needs a TURN server")
    policy = TransportPolicy.RELAY if relay_only else TransportPolicy.ALL
    return Connection(
        ice_controlling=controlling,
        components=1,
        turn_server=(turn.host, turn.port) if turn else None,
        turn_username=turn.username if turn else None,
        turn_password=turn.password if turn else None,
        turn_transport=turn.transport if turn else "udp",
        transport_policy=policy,
    )


async def gather(connection: Connection, host_addresses: Sequence[str]) -> list[Candidate]:
    """Gather host candidates on ``host_addresses`` (plus a relay one with TURN) and install them.

    With the relay-only policy host addresses are not used at all (RFC 9429 section 3.5.3).
    """
    for address in host_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise MediaError(f"host address must be an IP literal, not {address!r}") from exc
    relay_only = connection._transport_policy == TransportPolicy.RELAY
    addresses = [] if relay_only else list(host_addresses)
    candidates: list[Candidate] = await connection.get_component_candidates(
        component=COMPONENT, addresses=addresses
    )
    if not candidates:
        raise IceFailed(f"no local ICE candidate could be gathered on {addresses or 'TURN'}")
    _install_local_candidates(connection, candidates)
    return candidates


def _install_local_candidates(connection: Connection, candidates: list[Candidate]) -> None:
    """Do what ``Connection.gather_candidates()`` does at its end, with our own candidate list.

    aioice 0.13.0 keeps gathering state in three private fields: ``_local_candidates`` (the list
    that ``local_candidates`` copies and ``connect()`` pairs from, through the protocols that
    ``get_component_candidates()`` already registered), and the ``_local_candidates_start`` /
    ``_local_candidates_end`` flags (``connect()`` refuses to run until ``_end`` is set, and a
    later ``gather_candidates()`` call is a no-op once ``_start`` is set).
    """
    if aioice.__version__ != PINNED_AIOICE:
        raise MediaError(
            f"voice.media.ice pokes aioice {PINNED_AIOICE} internals; found aioice "
            f"{aioice.__version__}: re-check _install_local_candidates against it"
        )
    for name in ("_local_candidates", "_local_candidates_start", "_local_candidates_end"):
        if not hasattr(connection, name):
            raise MediaError(f"aioice.Connection has no {name}: internals changed")
    if connection._local_candidates_start:
        raise MediaError("local candidates were already gathered on this connection")
    connection._local_candidates_start = True
    connection._local_candidates += candidates
    connection._local_candidates_end = True


def candidates_to_sdp(connection: Connection) -> list[str]:
    """The local candidates as SDP attribute values (``Candidate.to_sdp()``)."""
    return [c.to_sdp() for c in connection.local_candidates]


def check_credentials(ufrag: object, pwd: object) -> tuple[str, str]:
    """Validate remote ICE credentials (RFC 8839 ice-char, 4..256 and 22..256 characters)."""
    if not isinstance(ufrag, str) or not 4 <= len(ufrag) <= 256 or not _ICE_CHARS.match(ufrag):
        raise BadDescription("ice.ufrag must be 4-256 ICE characters")
    if not isinstance(pwd, str) or not 22 <= len(pwd) <= 256 or not _ICE_CHARS.match(pwd):
        raise BadDescription("ice.pwd must be 22-256 ICE characters")
    return ufrag, pwd


def parse_candidate(text: object) -> Candidate:
    """Parse one remote candidate strictly: component 1, UDP, IP literal, known type.

    Host names (mDNS included) are refused: resolving them could leak or hang, and our peers
    always send addresses.
    """
    if not isinstance(text, str) or len(text) > 512:
        raise BadDescription("an ICE candidate must be a string of at most 512 characters")
    try:
        candidate = Candidate.from_sdp(text)
        ip = ipaddress.ip_address(candidate.host)
    except ValueError as exc:
        raise BadDescription(f"malformed ICE candidate {text[:80]!r}") from exc
    if candidate.component != COMPONENT:
        raise BadDescription(f"ICE candidate component must be 1, not {candidate.component}")
    if candidate.transport.lower() != "udp":
        raise BadDescription(f"ICE candidate transport must be udp, not {candidate.transport!r}")
    if candidate.type not in _CANDIDATE_TYPES:
        raise BadDescription(f"ICE candidate type {candidate.type!r} is not allowed")
    if not 0 < candidate.port < 65536 or not 0 < candidate.priority < 2**32:
        raise BadDescription("ICE candidate port or priority out of range")
    if ip.is_multicast or ip.is_unspecified:
        raise BadDescription(f"ICE candidate address {ip} is not usable")
    return candidate


async def connect(
    connection: Connection,
    *,
    ufrag: str,
    pwd: str,
    candidates: Sequence[Candidate],
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> None:
    """Run the ICE checks against the peer; raise :class:`IceFailed` on failure or timeout."""
    connection.remote_username = ufrag
    connection.remote_password = pwd
    for candidate in candidates:
        await connection.add_remote_candidate(candidate)
    await connection.add_remote_candidate(None)  # end-of-candidates: lets failure be reported
    try:
        async with asyncio.timeout(connect_timeout):
            await connection.connect()
    except TimeoutError as exc:
        raise IceFailed(f"ICE did not connect within {connect_timeout:g} s") from exc
    except ConnectionError as exc:
        raise IceFailed(f"ICE failed: {exc}") from exc
