"""MediaTransport: one call's ICE connection, its SRTP keys, and the datagrams in between.

    outgoing RTP   -> SRTP protect -> send filter (tests) -> observer -> ICE socket
    outgoing RTCP  -> SRTCP protect --------------------------> observer -> ICE socket
    ICE socket -> count -> not RTP/RTCP (version 2): ignore
                        -> no keys yet: drop, count
                        -> 2nd byte 192..223: SRTCP unprotect -> on_rtcp(packet, arrival)
                        -> else:              SRTP unprotect  -> on_rtp(packet, arrival)

The one object that touches the socket (aiortc's ICE and SRTP transports in one, without DTLS:
the keys come from the end-to-end agreement, docs/media.md). It knows nothing of codecs, RTP
headers or report timing: plaintext packets go in, verified plaintext packets come out, and
everything refused is counted, never raised. Nothing is sent before :meth:`set_keys`.

ICE restart: :meth:`prepare_restart` gathers a second connection (same role, servers and
policy, fresh ufrag/pwd); :meth:`complete_restart` runs its checks and swaps it in. The SRTP
context, counters and sequence numbers carry on; the receive loop moves to the new connection.
When aioice closes the connection itself (consent expired, RFC 7675) :attr:`lost` is set and
the receive loop waits for such a swap; sends meanwhile are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aioice import Candidate, Connection

from voice.errors import IceFailed, MediaError
from voice.media import ice
from voice.media.description import RemoteDescription
from voice.media.ice import Gathered, MediaPath
from voice.media.iceservers import IceServers
from voice.media.rtcp import is_rtcp, is_rtp_or_rtcp
from voice.media.srtp import SrtpContext, SrtpCounters

__all__ = ["MediaTransport", "TransportCounters"]

logger = logging.getLogger(__name__)

PacketHandler = Callable[[bytes, float], None]  # (verified plaintext packet, loop arrival time)


@dataclass
class TransportCounters:
    """The transport's own packet counters (see MediaStats for their meaning)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    rtp_sent: int = 0
    rtcp_sent: int = 0
    filtered: int = 0
    send_errors: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    rtp_received: int = 0
    rtcp_received: int = 0
    before_keys: int = 0
    dropped_no_path: int = 0  # SRTP/SRTCP not sent: the ICE connection was lost (until restart)
    restarts: int = 0  # ICE restarts completed


class MediaTransport:
    """ICE, SRTP and datagram routing for one call; build it with :meth:`create`."""

    def __init__(
        self,
        connection: Connection,
        *,
        gathered: Gathered | None = None,
        host_addresses: Sequence[str] = (),
        servers: IceServers | None = None,
        relay_only: bool = False,
        send_filter: Callable[[bytes], bool] | None = None,
        on_datagram_sent: Callable[[bytes], None] | None = None,
    ) -> None:
        self._connection = connection
        self._gathered = gathered or Gathered(list(connection.local_candidates), [], {})
        self._host_addresses = tuple(host_addresses)
        self._servers = servers or IceServers()
        self._relay_only = relay_only
        self._remote_candidates: tuple[Candidate, ...] = ()
        self._pending: tuple[Connection, Gathered] | None = None  # a prepared ICE restart
        self._attempt: tuple[Gathered, tuple[Candidate, ...]] | None = None  # last checks run
        self._swapped: asyncio.Future[None] | None = None  # the receive loop waits for a swap
        self._failure: Exception | None = None  # raised by a handler in the socket callback
        self._send_filter = send_filter
        self._on_datagram_sent = on_datagram_sent
        self._srtp: SrtpContext | None = None
        self.srtp_counters = SrtpCounters()  # replaced by the context's own: outlives it
        self.counters = TransportCounters()
        self.sizes_sent: set[int] = set()  # distinct sizes of the SRTP (audio) packets sent
        self.sizes_received: set[int] = set()  # ... and of the authenticated ones received
        self.connected = asyncio.Event()
        self.keys_set = asyncio.Event()
        self.ice_connect_seconds: float | None = None
        self.lost = False  # aioice closed the connection itself: consent expired (RFC 7675)
        self._closed = False
        self._closers: set[asyncio.Future[None]] = set()  # old connections being closed

    @classmethod
    async def create(
        cls,
        *,
        controlling: bool,
        host_addresses: Sequence[str],
        servers: IceServers | None = None,
        relay_only: bool = False,
        send_filter: Callable[[bytes], bool] | None = None,
        on_datagram_sent: Callable[[bytes], None] | None = None,
    ) -> MediaTransport:
        """Gather host, STUN and TURN candidates; on failure nothing stays open.

        ``relay_only``: relay candidates only (IceFailed if no TURN allocation succeeds).
        ``send_filter`` sees each SRTP (audio) packet and returns False to drop it (loss
        injection for tests and benchmarks); ``on_datagram_sent`` observes every SRTP and SRTCP
        datagram handed to the socket (not aioice's own STUN checks).
        """
        servers = servers or IceServers()
        connection, gathered = await _gathered_connection(
            controlling, host_addresses, servers, relay_only
        )
        return cls(
            connection,
            gathered=gathered,
            host_addresses=host_addresses,
            servers=servers,
            relay_only=relay_only,
            send_filter=send_filter,
            on_datagram_sent=on_datagram_sent,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ice_connected(self) -> bool:
        """ICE connected, and neither lost since nor closed."""
        return self.connected.is_set() and not (self._closed or self.lost)

    def local_parameters(self) -> dict[str, Any]:
        """The ``ice`` part of our media description (JSON-able; see docs/media.md)."""
        return _parameters(self._connection)

    def path(self) -> MediaPath | None:
        """The nominated candidate pair (None before ICE connects, once lost or closed)."""
        if self.lost or self._closed:
            return None
        return ice.media_path(self._connection, self._gathered)

    def attempted(self) -> str:
        """One line naming the paths the last ICE checks tried (for a "no media path" error)."""
        gathered, remote = self._attempt or (self._gathered, self._remote_candidates)
        return ice.describe_attempts(gathered, remote)

    async def connect(self, remote: RemoteDescription, *, connect_timeout: float) -> None:
        """Run the ICE checks (raises IceFailed, or MediaError if closed meanwhile)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._remote_candidates = remote.candidates
        self._attempt = (self._gathered, remote.candidates)
        await ice.connect(
            self._connection,
            ufrag=remote.ufrag,
            pwd=remote.pwd,
            candidates=remote.candidates,
            connect_timeout=connect_timeout,
        )
        if self._closed:
            raise MediaError("media session was closed during connect()")
        self.ice_connect_seconds = loop.time() - began
        self.connected.set()

    def set_keys(self, *, tx: bytes, rx: bytes) -> None:
        """Install the SRTP keys (44-byte AES-256-GCM key||salt per direction), once."""
        if self._srtp is not None:
            raise MediaError("SRTP keys are already set")
        self._srtp = SrtpContext(tx, rx)
        self.srtp_counters = self._srtp.counters
        self.keys_set.set()

    async def ready(self) -> None:
        """Return once ICE is connected and the keys are set (in either order)."""
        await self.connected.wait()
        await self.keys_set.wait()

    async def prepare_restart(
        self, servers: IceServers | None = None, host_addresses: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Gather a new connection for an ICE restart; return its ``ice`` parameters.

        Same role, host addresses and relay policy as the current connection, fresh
        ufrag/pwd; the same ICE servers unless ``servers`` (e.g. fresher TURN credentials)
        is given. A restart prepared earlier and still pending is closed first.
        """
        if self._closed:
            raise MediaError("media transport is closed")
        await self._drop_pending()
        if servers is not None:
            self._servers = servers
        if host_addresses is not None:
            self._host_addresses = tuple(host_addresses)
        connection, gathered = await _gathered_connection(
            self._connection.ice_controlling, self._host_addresses, self._servers, self._relay_only
        )
        if self.closed:  # meanwhile
            await connection.close()
            raise MediaError("media transport was closed during prepare_restart()")
        await self._drop_pending()  # a concurrent prepare_restart() finished first
        self._pending = (connection, gathered)
        return _parameters(connection)

    async def complete_restart(self, remote_ice: dict[str, Any], *, timeout: float) -> None:  # noqa: ASYNC109
        """Run the checks of the prepared restart against ``remote_ice``; swap it in.

        ``remote_ice`` is the peer's ``prepare_restart()`` result, checked strictly
        (BadDescription). On failure (IceFailed) the pending connection is closed and the
        current one stays; on success the old connection is closed.
        """
        if self._closed:
            raise MediaError("media transport is closed")
        if self._pending is None:
            raise MediaError("no ICE restart was prepared")
        pending, gathered = self._pending
        try:
            ufrag, pwd, candidates = ice.parse_ice_parameters(remote_ice)
            self._attempt = (gathered, candidates)
            await ice.connect(
                pending, ufrag=ufrag, pwd=pwd, candidates=candidates, connect_timeout=timeout
            )
            if self.closed:  # meanwhile
                raise MediaError("media transport was closed during complete_restart()")
            if self._pending is None or self._pending[0] is not pending:
                raise IceFailed("the ICE restart was replaced by a newer one")
        except BaseException:
            if self._pending is not None and self._pending[0] is pending:
                self._pending = None
            await pending.close()
            raise
        self._pending = None
        old, self._connection = self._connection, pending
        self._gathered, self._remote_candidates = gathered, candidates
        self.lost = False
        self.counters.restarts += 1
        self.connected.set()
        if self._swapped is not None and not self._swapped.done():
            self._swapped.set_result(None)
        logger.info("media: ICE restart complete (%s)", self.path())
        ice.wake_receiver(old)  # the receive loop moves to the new connection at once
        # Closing the old one may wait long: its TURN allocations are released with requests
        # that cannot get through when the old path is what failed (a vanished address).
        closer = asyncio.ensure_future(_close_quietly(old))
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    async def send_rtp(self, packet: bytes) -> None:
        """Protect and send one RTP packet; dropped silently without keys or once stopped."""
        if self._srtp is None or self._closed:
            return
        data = self._srtp.protect(packet)
        self.sizes_sent.add(len(data))
        if self._send_filter is not None and not self._send_filter(data):
            self.counters.filtered += 1
            return
        self.counters.rtp_sent += 1
        await self._transmit(data)

    async def send_rtcp(self, packet: bytes) -> bool:
        """Protect and send one (compound) RTCP packet; False once the keys are dropped."""
        if self._srtp is None:
            return False
        self.counters.rtcp_sent += 1
        await self._transmit(self._srtp.protect_rtcp(packet))
        return True

    async def receive(self, on_rtp: PacketHandler, on_rtcp: PacketHandler) -> None:
        """Route verified packets until the connection ends (then :attr:`lost` tells why).

        Datagrams are routed from the socket's callback as they arrive
        (:func:`voice.media.ice.deliver_directly`: no queue and no task step per packet); this
        loop routes what was queued before, and follows an ICE restart to the new connection.
        A handler that raises ends the loop with its exception, as it always did.
        """
        loop = asyncio.get_running_loop()
        hooked: Connection | None = None
        try:
            while True:
                connection = self._connection
                if connection is not hooked:
                    if hooked is not None:
                        ice.deliver_directly(hooked, None)
                    ice.deliver_directly(connection, self._direct(connection, on_rtp, on_rtcp))
                    hooked = connection
                try:
                    data = await connection.recv()  # queued before the hook (in order), or None
                except ConnectionError:
                    if self._failure is not None:
                        raise self._failure from None
                    if self._closed:
                        return
                    if connection is not self._connection:
                        continue  # an ICE restart swapped in a new connection
                    # aioice closed it itself: consent expired (RFC 7675). Wait for a restart.
                    self.lost = True
                    logger.warning("media: ICE connection lost; waiting for an ICE restart")
                    self._swapped = loop.create_future()
                    await self._swapped
                    continue
                self._route(data, loop.time(), on_rtp, on_rtcp)
        finally:
            if hooked is not None:
                ice.deliver_directly(hooked, None)

    def _direct(
        self, connection: Connection, on_rtp: PacketHandler, on_rtcp: PacketHandler
    ) -> Callable[[bytes], None]:
        """The socket callback's handler for ``connection``: route at once while it is the
        current connection; once a restart replaced it, queue as aioice does (the receive loop
        reads the old queue up to its end, as before). An exception stops the receive loop."""
        loop = asyncio.get_running_loop()

        def arrived(data: bytes) -> None:
            if connection is not self._connection or self._failure is not None:
                ice.deliver_directly(connection, None)
                connection.data_received(data, ice.COMPONENT)
                return
            try:
                self._route(data, loop.time(), on_rtp, on_rtcp)
            except Exception as exc:
                self._failure = exc
                ice.deliver_directly(connection, None)
                ice.wake_receiver(connection)

        return arrived

    def _route(
        self, data: bytes, arrival: float, on_rtp: PacketHandler, on_rtcp: PacketHandler
    ) -> None:
        """One datagram from the ICE path: count it, verify it, hand it on (module docstring)."""
        c = self.counters
        c.packets_received += 1
        c.bytes_received += len(data)
        if not is_rtp_or_rtcp(data):
            return
        srtp = self._srtp
        if srtp is None:
            c.before_keys += 1
            return
        if is_rtcp(data):
            plain = srtp.unprotect_rtcp(data)
            if plain is not None:
                c.rtcp_received += 1
                on_rtcp(plain, arrival)
        else:
            plain = srtp.unprotect(data)
            if plain is not None:
                c.rtp_received += 1
                self.sizes_received.add(len(data))
                on_rtp(plain, arrival)

    def stop(self) -> None:
        """The first half of :meth:`close`, at once: send no more RTP, and take the end of the
        connection from now on for our own doing rather than a lost peer."""
        self._closed = True
        if self._swapped is not None and not self._swapped.done():
            self._swapped.set_result(None)  # the receive loop sees _closed and returns

    async def close(self) -> None:
        """Close ICE (and a pending restart) and drop the keys (best effort, see
        voice.media.srtp); idempotent."""
        self.stop()
        for closer in list(self._closers):
            closer.cancel()
        await asyncio.gather(*self._closers, return_exceptions=True)
        await self._drop_pending()
        await self._connection.close()
        if self._srtp is not None:
            self._srtp.close()
            self._srtp = None

    async def _drop_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending[0].close()

    async def _transmit(self, data: bytes) -> None:
        if self.lost:
            self.counters.dropped_no_path += 1
            return
        if self._on_datagram_sent is not None:
            self._on_datagram_sent(data)
        try:
            await self._connection.send(data)
        except ConnectionError:
            self.counters.send_errors += 1
            return
        self.counters.packets_sent += 1
        self.counters.bytes_sent += len(data)


def _parameters(connection: Connection) -> dict[str, Any]:
    return {
        "ufrag": connection.local_username,
        "pwd": connection.local_password,
        "candidates": ice.candidates_to_sdp(connection),
    }


async def _gathered_connection(
    controlling: bool, host_addresses: Sequence[str], servers: IceServers, relay_only: bool
) -> tuple[Connection, Gathered]:
    connection = ice.make_connection(controlling=controlling, relay_only=relay_only)
    try:
        gathered = await ice.gather(connection, host_addresses, servers)
        if relay_only and not gathered.relay_transports:
            raise IceFailed(
                "relay only, but no TURN allocation succeeded: "
                + ice.describe_attempts(gathered, [])
            )
    except BaseException:
        await connection.close()
        raise
    return connection, gathered


OLD_CLOSE_TIMEOUT = 5.0  # seconds an old connection (after a restart) may take to close


async def _close_quietly(connection: Connection) -> None:
    with contextlib.suppress(Exception, TimeoutError):
        await asyncio.wait_for(connection.close(), OLD_CLOSE_TIMEOUT)
