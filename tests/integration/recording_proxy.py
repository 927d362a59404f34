"""A TCP proxy in front of the signaling server that records every byte, both ways.

It also takes the recorded WebSocket streams apart (RFC 6455 framing, client frames unmasked,
no extensions since both ends disable compression), so a test can look at exactly what the
server received and sent: raw bytes, frame payloads, and the base64 values inside them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stream:
    """One TCP connection through the proxy."""

    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)


class RecordingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.streams: list[Stream] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = Stream()
        self.streams.append(stream)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pumps = [
            asyncio.create_task(_pump(reader, up_writer, stream.to_server)),
            asyncio.create_task(_pump(up_reader, writer, stream.to_client)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        for w in (writer, up_writer):
            w.close()

    # ---- what the server saw ------------------------------------------------------------

    def raw(self) -> list[bytes]:
        """Every byte each way on every connection (client frames still masked)."""
        return [bytes(b) for s in self.streams for b in (s.to_server, s.to_client)]

    def frames_to_server(self) -> list[tuple[int, bytes]]:
        return [f for s in self.streams for f in parse_frames(bytes(s.to_server), masked=True)]

    def frames_to_client(self) -> list[tuple[int, bytes]]:
        return [f for s in self.streams for f in parse_frames(bytes(s.to_client), masked=False)]

    def everything(self) -> list[bytes]:
        """Raw bytes, frame payloads, and the decoded base64 strings inside the JSON frames."""
        out = self.raw()
        for _, payload in self.frames_to_server() + self.frames_to_client():
            out.append(payload)
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                out.extend(_base64_values(json.loads(payload)))
        return out


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            log += data
            writer.write(data)
            await writer.drain()


def parse_frames(data: bytes, *, masked: bool) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of each WebSocket frame after the HTTP handshake."""
    end = data.find(b"\r\n\r\n")
    assert end >= 0, "no HTTP handshake"
    pos, frames = end + 4, []
    while pos + 2 <= len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        assert bool(data[pos + 1] & 0x80) == masked, "client frames are masked, server's not"
        pos += 2
        if length == 126:
            length, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        mask = b""
        if masked:
            mask, pos = data[pos : pos + 4], pos + 4
        payload = data[pos : pos + length]
        if len(payload) < length:
            break  # the capture ended mid-frame
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frames.append((opcode, payload))
        pos += length
    return frames


def _base64_values(obj: Any) -> list[bytes]:
    if isinstance(obj, dict):
        return [v for item in obj.values() for v in _base64_values(item)]
    if isinstance(obj, list):
        return [v for item in obj for v in _base64_values(item)]
    if isinstance(obj, str) and len(obj) >= 8:
        try:
            return [base64.b64decode(obj, validate=True)]
        except (binascii.Error, ValueError):
            return []
    return []
