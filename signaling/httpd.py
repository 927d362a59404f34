"""A tiny HTTP/1.1 server for operations: ``GET /healthz`` and ``GET /metrics`` (Prometheus).

It runs on its own port so that scrapes never compete with the WebSocket handshakes. It reads
at most a few kilobytes of request within a deadline and always closes after one response;
one address holds at most a few of its connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from signaling.router import address_group

MAX_REQUEST_BYTES = 8_192
REQUEST_TIMEOUT = 2.0  # s for the whole request to arrive
RESPONSE_TIMEOUT = 5.0  # s for the answer to be taken
MAX_CLIENTS = 64
# At once from one address (an IPv6 /64 counts as one, as everywhere): 64 idle sockets from
# one attacker, reopened as they time out, would otherwise keep every check and scrape out.
MAX_PER_ADDRESS = 8


class OpsHttpServer:
    def __init__(
        self, registry: CollectorRegistry, health: Callable[[], dict[str, object]]
    ) -> None:
        self._registry = registry
        self._health = health
        self._server: asyncio.Server | None = None
        self._clients = asyncio.Semaphore(MAX_CLIENTS)
        self._per_address: Counter[str] = Counter()

    async def start(self, host: str, port: int) -> int:
        """Listen; return the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST_BYTES)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = address_group(str(peer[0])) if isinstance(peer, tuple) and peer else "?"
        if self._clients.locked() or self._per_address[address] >= MAX_PER_ADDRESS:
            writer.close()
            return
        self._per_address[address] += 1
        async with self._clients:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, ctype, body = await self._respond(reader)
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode("ascii") + body)
                async with asyncio.timeout(RESPONSE_TIMEOUT):
                    await writer.drain()
            except (
                TimeoutError,
                ConnectionError,
                ValueError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ):
                pass
            finally:
                self._per_address[address] -= 1
                if self._per_address[address] <= 0:
                    del self._per_address[address]
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        request_line = await reader.readuntil(b"\r\n")
        total = len(request_line)
        while True:  # skip the headers; bounded by MAX_REQUEST_BYTES in total
            line = await reader.readuntil(b"\r\n")
            total += len(line)
            if total > MAX_REQUEST_BYTES:
                return "431 Request Header Fields Too Large", "text/plain", b"too large\n"
            if line == b"\r\n":
                break
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == "/healthz":
            return "200 OK", "application/json", json.dumps(self._health()).encode() + b"\n"
        if target == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        return "404 Not Found", "text/plain", b"not found\n"
