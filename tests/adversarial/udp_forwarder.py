"""A recording UDP forwarder: the eavesdropper on the media path.

It listens on a loopback port and relays every datagram to ``upstream`` (a TURN server), one
upstream socket per client address, like a NAT would; it records every datagram in both
directions with its time and direction. The malicious signaling server tells both phones to use
"its" TURN relay at the forwarder's address, so all of a call's media crosses it (twice: caller
to relay, relay to callee). :func:`turn_payloads` unwraps the TURN framing (ChannelData, Send
and Data indications) to get back the datagrams the phones exchanged: SRTP and SRTCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

Address = tuple[str, int]


@dataclass(frozen=True)
class Datagram:
    direction: str  # "up": client -> relay, "down": relay -> client
    client: Address
    data: bytes
    at: float


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, forwarder: RecordingForwarder, client: Address) -> None:
        self.forwarder = forwarder
        self.client = client

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.forwarder.record("down", self.client, data)
        self.forwarder.send_to_client(data, self.client)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, forwarder: RecordingForwarder) -> None:
        self.forwarder = forwarder

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.forwarder.from_client(data, addr)


@dataclass(eq=False)
class RecordingForwarder:
    upstream: Address
    recording: list[Datagram] = field(default_factory=list)
    port: int = 0
    _listener: asyncio.DatagramTransport | None = None
    _upstreams: dict[Address, asyncio.DatagramTransport] = field(default_factory=dict)
    _pending: dict[Address, list[bytes]] = field(default_factory=dict)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=("127.0.0.1", 0)
        )
        self._listener = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        for t in self._upstreams.values():
            t.close()
        if self._listener is not None:
            self._listener.close()

    def record(self, direction: str, client: Address, data: bytes) -> None:
        at = asyncio.get_running_loop().time()
        self.recording.append(Datagram(direction, client, bytes(data), at))

    def send_to_client(self, data: bytes, client: Address) -> None:
        if self._listener is not None:
            self._listener.sendto(data, client)

    def from_client(self, data: bytes, client: Address) -> None:
        self.record("up", client, data)
        transport = self._upstreams.get(client)
        if transport is not None:
            transport.sendto(data)
            return
        first = client not in self._pending
        self._pending.setdefault(client, []).append(data)
        if first:
            asyncio.get_running_loop().create_task(self._open(client))

    async def _open(self, client: Address) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, client), remote_addr=self.upstream
        )
        self._upstreams[client] = transport
        for data in self._pending.pop(client, []):
            transport.sendto(data)


@contextlib.asynccontextmanager
async def running_forwarder(upstream: Address) -> AsyncIterator[RecordingForwarder]:
    forwarder = RecordingForwarder(upstream)
    await forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.close()


_STUN_SEND_INDICATION = 0x0016
_STUN_DATA_INDICATION = 0x0017
_ATTR_DATA = 0x0013


def turn_payload(datagram: bytes) -> bytes | None:
    """The peer datagram inside a TURN ChannelData message or Send/Data indication, if any."""
    if len(datagram) >= 4 and 0x40 <= datagram[0] <= 0x7F:  # ChannelData (RFC 8656 12.4)
        (length,) = struct.unpack_from(">H", datagram, 2)
        return datagram[4 : 4 + length] if 4 + length <= len(datagram) else None
    if len(datagram) < 20 or datagram[0] & 0xC0:
        return None
    kind, length = struct.unpack_from(">HH", datagram, 0)
    if kind not in (_STUN_SEND_INDICATION, _STUN_DATA_INDICATION):
        return None
    pos, end = 20, min(len(datagram), 20 + length)
    while pos + 4 <= end:
        attr, size = struct.unpack_from(">HH", datagram, pos)
        if attr == _ATTR_DATA:
            return datagram[pos + 4 : pos + 4 + size]
        pos += 4 + (size + 3) // 4 * 4
    return None


def is_rtcp(packet: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192-223 in the second byte."""
    return len(packet) >= 2 and 192 <= packet[1] <= 223


def is_rtp_or_rtcp(packet: bytes) -> bool:
    return len(packet) >= 12 and packet[0] >> 6 == 2


def media_packets(recording: list[Datagram], direction: str = "up") -> list[bytes]:
    """The SRTP/SRTCP datagrams the phones sent through the relay (client -> relay leg)."""
    out = []
    for d in recording:
        if d.direction != direction:
            continue
        inner = turn_payload(d.data)
        if inner is not None and is_rtp_or_rtcp(inner):
            out.append(inner)
    return out
