"""ICE for the media path: an aioice ``Connection`` with host, STUN and TURN candidates.

Where aioice 0.13.0 falls short we gather ourselves and install the result:

* aioice gathers host candidates on every interface address *except* 127.0.0.1, but tests and
  the demo run on loopback. :func:`~voice.media.iceservers.interface_addresses` lists the usable
  addresses (loopback only on request) and host candidates come from the public
  ``Connection.get_component_candidates()``.
* aioice's ``Connection`` takes one STUN and one TURN server. We query every STUN server for a
  server-reflexive candidate of each IPv4 host socket (``aioice.ice.server_reflexive_candidate``)
  and allocate a relay on every TURN server (``aioice.turn.create_turn_endpoint``, UDP, TCP or
  TLS), all at once and bounded by ``server_timeout``: a blocked port costs that much, no more,
  and a failing server is logged (never its credentials) and skipped.

The aioice private fields we need are touched in two documented functions only,
:func:`_install_local_candidates` (gathering state, the relay sockets) and
:func:`_nominated_pair` (the selected pair), both pinned to aioice 0.13.0
(``tests/voice/media/test_ice_loopback.py`` fails loudly if that changes).

Candidates travel inside the (end-to-end encrypted) call messages as their SDP attribute text,
``Candidate.to_sdp()``; :func:`parse_candidate` checks each one strictly before aioice sees it.
Only one component (RTP and RTCP multiplexed, RFC 5761) and UDP are used; a relay candidate is
UDP on the relayed side even when we reach the TURN server over TCP or TLS.

aioice nominates aggressively: the first pair that answers wins. A relay pair answers in one
round trip, while a pair through two NATs needs both sides' first checks to open the holes, so
the relay would win nearly every time. :func:`connect` therefore lets the peer's relay
candidates in only :data:`RELAY_LAST` seconds after the others (as trickle ICE would), unless
one side has nothing but relays: a direct path is preferred, the relay stays the fallback.

The servers and addresses ICE is given (:class:`IceServers`, :class:`StunServer`,
:class:`TurnServer`, :func:`interface_addresses`, :func:`turn_tls_context`) live in
:mod:`voice.media.iceservers` and are re-exported here. About 500 lines remain, on purpose:
what is left is one job, our side of the aioice connection (gathering, the pinned internals,
nomination, the peer's candidates checked and connected), best read in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aioice
import aioice.ice
import aioice.turn
from aioice import Candidate, Connection, TransportPolicy
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol

from voice.errors import BadDescription, IceFailed, MediaError

# Re-exported: callers may keep importing the server configuration from here.
from voice.media.iceservers import DEFAULT_STUN_PORT as DEFAULT_STUN_PORT
from voice.media.iceservers import DEFAULT_TURNS_PORT as DEFAULT_TURNS_PORT
from voice.media.iceservers import MAX_HOST_ADDRESSES as MAX_HOST_ADDRESSES
from voice.media.iceservers import IceServers as IceServers
from voice.media.iceservers import RelayTransport as RelayTransport
from voice.media.iceservers import StunServer as StunServer
from voice.media.iceservers import TurnServer as TurnServer
from voice.media.iceservers import interface_addresses as interface_addresses
from voice.media.iceservers import turn_tls_context as turn_tls_context

PINNED_AIOICE = "0.13.0"
COMPONENT = 1
MAX_REMOTE_CANDIDATES = 32
DEFAULT_CONNECT_TIMEOUT = 10.0
SERVER_TIMEOUT = 4.0  # STUN and TURN gathering, all servers at once
RELAY_LAST = 1.0  # the peer's relay candidates join the checks this long after the others
MAX_STUN_SERVERS = 4
MAX_TURN_SERVERS = 8

_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
_CANDIDATE_TYPES = frozenset({"host", "srflx", "relay"})

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One server asked during gathering, and what came of it (for :func:`describe_attempts`)."""

    kind: Literal["srflx", "relay"]
    server: str  # its URI, no credentials
    address: str | None  # the candidate's address on success
    error: str | None = None


@dataclass
class Gathered:
    """What :func:`gather` found: the candidates, and every server attempt."""

    candidates: list[Candidate]
    attempts: list[Attempt]
    relay_transports: dict[tuple[str, int], RelayTransport]  # relay candidate -> how reached


@dataclass(frozen=True)
class MediaPath:
    """The nominated candidate pair: which way the media goes."""

    local_type: str  # host, srflx, prflx, relay
    remote_type: str
    local_transport: RelayTransport  # to the relay: udp, tcp or tls; "udp" unless relayed
    remote_address: tuple[str, int]
    kind: Literal["host", "srflx", "relay"]

    def __str__(self) -> str:  # e.g. "relay (tcp)"
        return f"{self.kind} ({self.local_transport})"


def path_kind(local_type: str, remote_type: str) -> Literal["host", "srflx", "relay"]:
    """relay if either side is relayed, srflx if either is reflexive (srflx, prflx), else host."""
    types = {local_type, remote_type}
    if "relay" in types:
        return "relay"
    if types & {"srflx", "prflx"}:
        return "srflx"
    return "host"


def make_connection(*, controlling: bool, relay_only: bool = False) -> Connection:
    """Create (but do not gather) an ICE connection with one component.

    STUN and TURN are not given to aioice (it takes one of each): :func:`gather` uses them.
    """
    policy = TransportPolicy.RELAY if relay_only else TransportPolicy.ALL
    return Connection(ice_controlling=controlling, components=1, transport_policy=policy)


async def gather(
    connection: Connection,
    host_addresses: Sequence[str],
    servers: IceServers | None = None,
    *,
    server_timeout: float = SERVER_TIMEOUT,
) -> Gathered:
    """Gather host, server-reflexive and relay candidates and install them on ``connection``.

    With the relay-only policy host addresses and STUN are not used at all (RFC 9429 section
    3.5.3) and the relay candidates hide their related address. Raises IceFailed when no
    candidate at all could be gathered (naming what was tried).
    """
    servers = servers or IceServers()
    for address in host_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise MediaError(f"host address must be an IP literal, not {address!r}") from exc
    relay_only = connection._transport_policy == TransportPolicy.RELAY
    addresses = [] if relay_only else list(dict.fromkeys(host_addresses))[:MAX_HOST_ADDRESSES]
    host: list[Candidate] = await connection.get_component_candidates(
        component=COMPONENT, addresses=addresses
    )
    # get_component_candidates already registered the host sockets with the connection.
    gathered = Gathered(list(host), [], {})
    relays: list[StunProtocol] = []
    try:
        await _ask_servers(connection, servers, gathered, relays, relay_only, server_timeout)
        if not gathered.candidates:
            raise IceFailed("no local ICE candidate could be gathered: " + _tried(gathered))
        _install_local_candidates(connection, gathered.candidates, relays)
    except BaseException:
        await asyncio.gather(*(p.close() for p in relays), return_exceptions=True)
        raise
    return gathered


def _tried(gathered: Gathered) -> str:
    return describe_attempts(gathered, []) or "no address and no server"


async def _ask_servers(
    connection: Connection,
    servers: IceServers,
    gathered: Gathered,
    relays: list[StunProtocol],
    relay_only: bool,
    limit: float,
) -> None:
    """STUN for every IPv4 host socket and every TURN allocation, concurrently, bounded."""
    stun_jobs: list[tuple[str, asyncio.Task[tuple[Candidate, None]]]] = []
    turn_jobs: list[tuple[str, asyncio.Task[tuple[Candidate, StunProtocol, RelayTransport]]]] = []
    if not relay_only:
        for protocol in _host_protocols(connection):
            if ipaddress.ip_address(protocol.local_candidate.host).version != 4:
                continue
            for stun in servers.stun[:MAX_STUN_SERVERS]:
                query = aioice.ice.server_reflexive_candidate(protocol, (stun.host, stun.port))
                stun_jobs.append((stun.uri, asyncio.ensure_future(query)))
    for turn in servers.turn[:MAX_TURN_SERVERS]:
        allocation = _allocate(connection, turn, servers.ca_file, hide_related=relay_only)
        turn_jobs.append((turn.uri, asyncio.ensure_future(allocation)))
    tasks: list[asyncio.Task[Any]] = [t for _, t in stun_jobs] + [t for _, t in turn_jobs]
    if not tasks:
        return
    try:
        _, pending = await asyncio.wait(tasks, timeout=limit)
    except BaseException:  # cancelled (a hang-up, a caller's timeout): leave no allocation
        await _abandon(tasks, turn_jobs)
        raise
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # a late success is still used
    srflx_bases: set[tuple[str | None, int | None]] = set()
    for uri, stun_task in stun_jobs:
        error = _failure(stun_task, limit)
        if error is not None:
            gathered.attempts.append(Attempt("srflx", uri, None, error))
            continue
        candidate, _ = stun_task.result()
        base = (candidate.related_address, candidate.related_port)
        if base not in srflx_bases and not _same_as_host(candidate, gathered.candidates):
            srflx_bases.add(base)
            gathered.candidates.append(candidate)
        gathered.attempts.append(Attempt("srflx", uri, candidate.host))
    for uri, turn_task in turn_jobs:
        error = _failure(turn_task, limit)
        if error is not None:
            gathered.attempts.append(Attempt("relay", uri, None, error))
            continue
        candidate, relay, how = turn_task.result()
        relays.append(relay)
        gathered.candidates.append(candidate)
        gathered.relay_transports[(candidate.host, candidate.port)] = how
        gathered.attempts.append(Attempt("relay", uri, candidate.host))
    for attempt in gathered.attempts:
        if attempt.error is not None:
            what = "TURN" if attempt.kind == "relay" else "STUN"
            logger.warning("ICE: %s %s failed: %s", what, attempt.server, attempt.error)


async def _abandon(
    tasks: Sequence[asyncio.Task[Any]],
    turn_jobs: Sequence[tuple[str, asyncio.Task[tuple[Candidate, StunProtocol, RelayTransport]]]],
) -> None:
    """Cancel every query, and release the allocations that already succeeded (their sockets
    and refresh loops would outlive the call and count against the relay's per-user quota)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    done = [t.result()[1] for _, t in turn_jobs if not t.cancelled() and t.exception() is None]
    await asyncio.gather(*(relay.close() for relay in done), return_exceptions=True)


def _failure(task: asyncio.Task[Any], limit: float) -> str | None:
    if task.cancelled():
        return f"no answer in {limit:g} s"
    exc = task.exception()
    return None if exc is None else _why(exc)


def _same_as_host(candidate: Candidate, candidates: Sequence[Candidate]) -> bool:
    """A srflx equal to a host candidate (no NAT) is redundant (RFC 8445 section 5.1.3)."""
    return any(
        c.type == "host" and (c.host, c.port) == (candidate.host, candidate.port)
        for c in candidates
    )


def _why(exc: BaseException) -> str:
    """A short reason for a failed server, without anything secret (aioice's messages name
    STUN error codes, socket errors name addresses: neither carries the credentials)."""
    text = str(exc) or type(exc).__name__
    return text[:160]


async def _allocate(
    connection: Connection, turn: TurnServer, ca_file: Path | None, *, hide_related: bool
) -> tuple[Candidate, StunProtocol, RelayTransport]:
    """One TURN allocation; the relay candidate is built as aioice's ``relayed_candidate``
    builds it, with a foundation and local preference of its own per server transport."""
    ssl_context = turn_tls_context(ca_file) if turn.tls else None
    _, protocol = await aioice.turn.create_turn_endpoint(
        lambda: StunProtocol(connection),
        server_addr=(turn.host, turn.port),
        username=turn.username,
        password=turn.password,
        ssl=ssl_context,
        transport=turn.transport,
    )
    address = protocol.transport.get_extra_info("sockname")
    related = protocol.transport.get_extra_info("related_address")
    if hide_related:  # RFC 9429 section 3.5.3, in the format of RFC 8839 section 5.1
        related = ("0.0.0.0", 9) if ipaddress.ip_address(address[0]).version == 4 else ("::", 9)
    how = turn.relay_transport
    preference = {"udp": 65535, "tcp": 32767, "tls": 16383}[how]  # prefer the cheapest leg
    protocol.local_candidate = Candidate(
        foundation=candidate_foundation("relay", f"udp-{how}", address[0]),
        component=COMPONENT,
        transport="udp",
        priority=candidate_priority(COMPONENT, "relay", preference),
        host=address[0],
        port=address[1],
        type="relay",
        related_address=related[0],
        related_port=related[1],
    )
    return protocol.local_candidate, protocol, how


def _require_pinned(connection: Connection, names: Sequence[str]) -> None:
    if aioice.__version__ != PINNED_AIOICE:
        raise MediaError(
            f"voice.media.ice pokes aioice {PINNED_AIOICE} internals; found aioice "
            f"{aioice.__version__}: re-check _install_local_candidates and _nominated_pair"
        )
    for name in names:
        if not hasattr(connection, name):
            raise MediaError(f"aioice.Connection has no {name}: internals changed")


def _install_local_candidates(
    connection: Connection,
    candidates: list[Candidate],
    relay_protocols: Sequence[StunProtocol] = (),
) -> None:
    """Do what ``Connection.gather_candidates()`` does at its end, with our own candidates.

    aioice 0.13.0 keeps gathering state in private fields: ``_local_candidates`` (the list
    that ``local_candidates`` copies), ``_protocols`` (the sockets ``connect()`` pairs from and
    ``close()`` closes: the host sockets are already there, registered by
    ``get_component_candidates()``; our relay sockets are added here, as aioice adds its one
    relay), and the ``_local_candidates_start`` / ``_local_candidates_end`` flags (``connect()``
    refuses to run until ``_end`` is set, and a later ``gather_candidates()`` call is a no-op
    once ``_start`` is set).
    """
    names = ("_local_candidates", "_local_candidates_start", "_local_candidates_end", "_protocols")
    _require_pinned(connection, names)
    if connection._local_candidates_start:
        raise MediaError("local candidates were already gathered on this connection")
    connection._local_candidates_start = True
    connection._protocols += list(relay_protocols)
    connection._local_candidates += candidates
    connection._local_candidates_end = True


def wake_receiver(connection: Connection) -> None:
    """Make a ``recv()`` waiting on ``connection`` raise ConnectionError now, as ``close()``
    does at its very end (aioice 0.13.0 ends its private ``_queue`` with None): the receive
    loop must not wait for the old connection's TURN allocations to be released."""
    _require_pinned(connection, ("_queue",))
    connection._queue.put_nowait(None)


def deliver_directly(connection: Connection, handler: Callable[[bytes], None] | None) -> None:
    """Hand every datagram ``connection`` receives to ``handler`` at once, from the socket's
    callback, instead of queueing it for ``recv()``; ``None`` goes back to queueing.

    Why: aioice 0.13.0 puts each datagram on its private ``_queue``, and each one then costs a
    queue put, a future and a task step on the event loop before the receive loop sees it
    (docs/media.md, "Scaling"). Its sockets hand a datagram to the connection by calling
    ``connection.data_received(data, component)`` (STUN is handled before that), so an
    instance attribute of that name takes the call. ``recv()`` still returns what was queued
    before, and raises ConnectionError when the connection ends (``close()`` queues None).
    """
    _require_pinned(connection, ("_queue", "data_received"))
    if handler is None:
        connection.__dict__.pop("data_received", None)
        return

    def data_received(data: bytes, component: int) -> None:
        handler(data)

    setattr(connection, "data_received", data_received)  # noqa: B010 (mypy: a method)


def _host_protocols(connection: Connection) -> list[StunProtocol]:
    """The host sockets ``get_component_candidates()`` registered in the private
    ``_protocols`` list (aioice 0.13.0 returns only their candidates), to ask STUN through."""
    _require_pinned(connection, ("_protocols",))
    return [p for p in connection._protocols if p.local_candidate.type == "host"]


def _nominated_pair(connection: Connection) -> tuple[Candidate, Candidate] | None:
    """(local, remote) candidates of the nominated pair of our one component, or None.

    aioice 0.13.0 keeps it in the private ``_nominated`` dict (component -> CandidatePair) and
    has no public accessor; ``close()`` empties it.
    """
    _require_pinned(connection, ("_nominated",))
    pair = connection._nominated.get(COMPONENT)
    if pair is None:
        return None
    return pair.local_candidate, pair.remote_candidate


def media_path(connection: Connection, gathered: Gathered) -> MediaPath | None:
    """The nominated pair as a :class:`MediaPath` (None before ICE connects or once closed)."""
    pair = _nominated_pair(connection)
    if pair is None:
        return None
    local, remote = pair
    how: RelayTransport = "udp"
    if local.type == "relay":
        how = gathered.relay_transports.get((local.host, local.port), "udp")
    return MediaPath(
        local_type=local.type,
        remote_type=remote.type,
        local_transport=how,
        remote_address=(remote.host, remote.port),
        kind=path_kind(local.type, remote.type),
    )


def describe_attempts(gathered: Gathered, remote: Sequence[Candidate]) -> str:
    """One line: the paths tried and what the peer offered (addresses and URIs, no secret)."""
    ours: list[str] = [f"host {c.host}" for c in gathered.candidates if c.type == "host"]
    for a in gathered.attempts:
        if a.error is not None:
            ours.append(
                f"{'relay' if a.kind == 'relay' else 'stun'} {a.server} (failed: {a.error})"
            )
        elif a.kind == "relay":
            ours.append(f"relay {a.address} via {a.server}")
        else:
            ours.append(f"srflx {a.address}")
    text = "tried " + (", ".join(dict.fromkeys(ours)) or "nothing")
    if remote:
        theirs = ", ".join(dict.fromkeys(f"{c.type} {c.host}" for c in remote))
        text += f"; peer offered {theirs}"
    return text


def candidates_to_sdp(connection: Connection) -> list[str]:
    """The local candidates as SDP attribute values (``Candidate.to_sdp()``)."""
    return [c.to_sdp() for c in connection.local_candidates]


def parse_ice_parameters(obj: object) -> tuple[str, str, tuple[Candidate, ...]]:
    """Check the ``ice`` part of a description (or of an ICE restart) strictly:
    exactly ``ufrag``, ``pwd`` and 1..32 ``candidates``. Raises BadDescription."""
    if not isinstance(obj, dict) or set(obj) != {"ufrag", "pwd", "candidates"}:
        raise BadDescription("ice must be an object with exactly ufrag, pwd and candidates")
    ufrag, pwd = check_credentials(obj["ufrag"], obj["pwd"])
    raw = obj["candidates"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_REMOTE_CANDIDATES:
        raise BadDescription(f"ice.candidates must be a list of 1-{MAX_REMOTE_CANDIDATES}")
    return ufrag, pwd, tuple(parse_candidate(text) for text in raw)


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
    direct = [c for c in candidates if c.type != "relay"]
    relayed = [c for c in candidates if c.type == "relay"]
    local_direct = any(c.type != "relay" for c in connection.local_candidates)
    if not (direct and local_direct):  # nothing to prefer: take the relay at once
        direct, relayed = [*direct, *relayed], []
    for candidate in direct:
        await connection.add_remote_candidate(candidate)
    if not relayed:
        await connection.add_remote_candidate(None)  # end-of-candidates: lets failure be known
    checks = asyncio.ensure_future(connection.connect())
    try:
        async with asyncio.timeout(connect_timeout):
            if relayed:
                await asyncio.wait([checks], timeout=RELAY_LAST)
                if not checks.done():  # no direct path yet: let the relay in
                    for candidate in relayed:
                        await connection.add_remote_candidate(candidate)
                    await connection.add_remote_candidate(None)
            await checks
    except TimeoutError as exc:
        raise IceFailed(f"ICE did not connect within {connect_timeout:g} s") from exc
    except ConnectionError as exc:
        raise IceFailed(f"ICE failed: {exc}") from exc
    finally:
        if not checks.done():
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await checks
