"""Raw signaling sessions from any loopback address, for the registration, enumeration and
slow-loris attacks: what a script (not the voice client) sends to a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.signaling.helpers import User, make_user

ATTACK_WAIT = 10.0  # every wait is bounded; none is a timing assertion


def loopback_alias_works(ip: str) -> bool:
    """127.0.0.0/8 is all loopback on Linux; check the kernel lets us bind ``ip``."""
    with socket.socket() as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


class Session:
    """One WebSocket connection, logged in or not, spoken to in raw JSON frames."""

    def __init__(self, ws: ClientConnection, challenge: dict[str, Any]) -> None:
        self.ws = ws
        self.challenge = challenge
        self._next = 0

    @classmethod
    async def open(cls, url: str, *, source: str = "127.0.0.1") -> Session:
        ws = await connect(url, compression=None, local_addr=(source, 0), open_timeout=ATTACK_WAIT)
        challenge = json.loads(await asyncio.wait_for(ws.recv(), ATTACK_WAIT))
        return cls(ws, challenge)

    async def login(self, user: User) -> dict[str, Any]:
        """Send the login; the answer (``welcome`` or an ``error``, after which it closes)."""
        await self.ws.send(user.login_frame(self.challenge))
        return await self.recv()

    async def recv(self) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), ATTACK_WAIT))
        assert isinstance(frame, dict)
        return frame

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send one client frame with a fresh id; return the answer to it (skipping deliveries)."""
        self._next += 1
        msg_id = str(self._next)
        await self.ws.send(json.dumps({"v": 1, **frame, "id": msg_id}))
        while True:
            answer = await self.recv()
            if answer.get("id") == msg_id:
                return answer

    async def lookup(self, name: str) -> dict[str, Any]:
        return await self.request({"type": "lookup", "user": name})

    async def send(self, to: str, body: str = "AA==") -> dict[str, Any]:
        return await self.request({"type": "send", "to": to, "body": body})

    async def turn(self) -> dict[str, Any]:
        return await self.request({"type": "turn"})

    async def close(self) -> None:
        await self.ws.close()


async def log_in(url: str, user: User, *, source: str = "127.0.0.1") -> tuple[Session, str]:
    """Open a session and log ``user`` in: the session and ``"welcome"`` or the error code."""
    session = await Session.open(url, source=source)
    answer = await session.login(user)
    if answer["type"] == "welcome":
        return session, "welcome"
    code = str(answer["code"])
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        await asyncio.wait_for(session.ws.wait_closed(), ATTACK_WAIT)
    assert session.ws.close_code == 4001, (code, session.ws.close_code)
    return session, code


async def register(url: str, name: str, *, source: str = "127.0.0.1") -> str:
    """Register ``name`` with a fresh key (one attempt, then hang up): the outcome code."""
    session, outcome = await log_in(url, make_user(name), source=source)
    await session.close()
    return outcome
