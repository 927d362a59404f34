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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aioice import Connection

from voice.errors import MediaError
from voice.media import ice
from voice.media.description import RemoteDescription
from voice.media.ice import TurnServer
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


class MediaTransport:
    """ICE, SRTP and datagram routing for one call; build it with :meth:`create`."""

    def __init__(
        self,
        connection: Connection,
        *,
        send_filter: Callable[[bytes], bool] | None = None,
        on_datagram_sent: Callable[[bytes], None] | None = None,
    ) -> None:
        self._connection = connection
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

    @classmethod
    async def create(
        cls,
        *,
        controlling: bool,
        host_addresses: Sequence[str],
        turn: TurnServer | None = None,
        relay_only: bool = False,
        send_filter: Callable[[bytes], bool] | None = None,
        on_datagram_sent: Callable[[bytes], None] | None = None,
    ) -> MediaTransport:
        """Gather ICE candidates on ``host_addresses`` (plus TURN); on failure nothing stays open.

        ``send_filter`` sees each SRTP (audio) packet and returns False to drop it (loss
        injection for tests and benchmarks); ``on_datagram_sent`` observes every SRTP and SRTCP
        datagram handed to the socket (not aioice's own STUN checks).
        """
        connection = ice.make_connection(controlling=controlling, turn=turn, relay_only=relay_only)
        try:
            await ice.gather(connection, host_addresses)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, send_filter=send_filter, on_datagram_sent=on_datagram_sent)

    @property
    def ice_connected(self) -> bool:
        """ICE connected, and neither lost since nor closed."""
        return self.connected.is_set() and not (self._closed or self.lost)

    def local_parameters(self) -> dict[str, Any]:
        """The ``ice`` part of our media description (JSON-able; see docs/media.md)."""
        return {
            "ufrag": self._connection.local_username,
            "pwd": self._connection.local_password,
            "candidates": ice.candidates_to_sdp(self._connection),
        }

    async def connect(self, remote: RemoteDescription, *, connect_timeout: float) -> None:
        """Run the ICE checks (raises IceFailed, or MediaError if closed meanwhile)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
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
        """Route verified packets until the connection ends (then :attr:`lost` tells why)."""
        loop = asyncio.get_running_loop()
        c = self.counters
        while True:
            try:
                data = await self._connection.recv()
            except ConnectionError:
                if not self._closed:  # aioice closed itself: consent expired (RFC 7675)
                    self.lost = True
                    logger.warning("media: ICE connection lost")
                return
            arrival = loop.time()
            c.packets_received += 1
            c.bytes_received += len(data)
            if not is_rtp_or_rtcp(data):
                continue
            srtp = self._srtp
            if srtp is None:
                c.before_keys += 1
                continue
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

    async def close(self) -> None:
        """Close ICE and drop the keys (best effort, see voice.media.srtp); idempotent."""
        self.stop()
        await self._connection.close()
        if self._srtp is not None:
            self._srtp.close()
            self._srtp = None

    async def _transmit(self, data: bytes) -> None:
        if self._on_datagram_sent is not None:
            self._on_datagram_sent(data)
        try:
            await self._connection.send(data)
        except ConnectionError:
            self.counters.send_errors += 1
            return
        self.counters.packets_sent += 1
        self.counters.bytes_sent += len(data)
