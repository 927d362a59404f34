"""Shared test helpers: users with real Ed25519 keys, configs on port 0, raw frame access."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from signaling.config import Config
from signaling.protocol import login_message
from signaling.wire import b64encode
from voice.net.client import SignalingClient


@dataclass
class User:
    name: str
    key: SigningKey

    @property
    def pub(self) -> bytes:
        return bytes(self.key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message).signature

    async def connect(self, url: str) -> SignalingClient:
        return await SignalingClient.connect(url, self.name, self.pub, self.sign)

    def login_frame(
        self,
        challenge: dict[str, Any],
        *,
        user: str | None = None,
        host: str = "127.0.0.1",
        binding: bytes = b"",
    ) -> str:
        """A login v2 answering ``challenge``, as dialed to ``host`` over plain ws:// (no
        certificate: empty ``binding``) unless told otherwise."""
        name = user or self.name
        message = login_message(
            server=challenge["server"],
            server_id=challenge["server_id"],
            host=host,
            binding=binding,
            user=name,
            key=self.pub,
            nonce=base64.b64decode(challenge["nonce"]),
        )
        frame = {"v": 1, "type": "login", "user": name, "key": b64encode(self.pub)}
        frame |= {"sig": b64encode(self.sign(message)), "host": host, "binding": b64encode(binding)}
        return json.dumps(frame)


def make_user(name: str, seed: int | None = None) -> User:
    key = SigningKey(bytes([seed]) * 32) if seed is not None else SigningKey.generate()
    return User(name, key)


# The per-address and per-user allowances of a real deployment, opened wide: the tests log in
# hundreds of fresh names from 127.0.0.1. tests/adversarial/ checks the real defaults.
PERMISSIVE: dict[str, Any] = {
    "registration_ip_burst": 1_000_000,
    "registration_burst": 1_000_000,
    "lookup_burst": 1_000_000,
    "turn_burst": 1_000_000,
}


def server_config(**changes: Any) -> Config:
    base: dict[str, Any] = {"port": 0, "http_port": 0, "db": ":memory:"}
    base["max_connections_per_ip"] = 10_000
    base.update(PERMISSIVE)  # tests register and look up many names from one address
    base.update(changes)
    return Config(**base)


class Raw:
    """A websockets connection spoken to in raw JSON, to send what a real client never would."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(
        cls, url: str, headers: dict[str, str] | None = None
    ) -> tuple[Raw, dict[str, Any]]:
        ws = await connect(url, compression=None, max_size=2**22, additional_headers=headers)
        raw = cls(ws)
        return raw, await raw.recv()

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def recv(self) -> dict[str, Any]:
        data = await self.ws.recv()
        obj = json.loads(data)
        assert isinstance(obj, dict)
        return obj

    async def login(self, user: User, challenge: dict[str, Any]) -> dict[str, Any]:
        await self.send(user.login_frame(challenge))
        return await self.recv()

    async def closed_code(self) -> int | None:
        await self.ws.wait_closed()
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


def url_of(server: Any) -> str:
    return f"ws://127.0.0.1:{server.port}"


class SilentClient:
    """Sans-I/O WebSocket client on a raw socket: after its login it never reads again and never
    answers a ping, like a crashed or hostile peer. Receive buffer kept tiny on purpose."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self.frames: list[Frame] = []

    @classmethod
    async def open(cls, port: int) -> SilentClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"))
        protocol.send_request(protocol.connect())
        client = cls(sock, protocol)
        await client._flush()
        while not any(f.opcode is Opcode.TEXT for f in client.frames):
            await client._read_some()
        return client

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self.protocol.data_to_send():
            if data:
                await loop.sock_sendall(self.sock, data)

    async def _read_some(self) -> bool:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self.frames.append(event)
        return bool(data)

    def texts(self) -> list[dict[str, Any]]:
        out = []
        for f in self.frames:
            if f.opcode is Opcode.TEXT:
                out.append(json.loads(bytes(f.data)))
        return out

    async def login(self, user: User) -> None:
        challenge = self.texts()[0]
        self.protocol.send_text(user.login_frame(challenge).encode())
        await self._flush()
        while not any(t.get("type") in ("welcome", "error") for t in self.texts()):
            await self._read_some()
        assert self.texts()[-1]["type"] == "welcome"

    async def read_until_eof(self) -> list[Frame]:
        """Start reading again (without answering anything) until the server hangs up."""
        while await self._read_some():
            pass
        return self.frames

    def close(self) -> None:
        self.sock.close()
