"""A hostile signaling server that relays the real server's login challenge to its visitors.

It serves ``wss://`` under a certificate of its own (valid for its own name, as any operator of
a domain can get one), or any certificate it is given. For each visitor it opens its own TLS
connection to the real server, forwards the real challenge unchanged, and forwards the signed
login back. With ``rewrite=True`` it first replaces the login's unsigned-looking fields, the
host and the certificate binding, with what the real server expects (the relay sees the real
certificate on its own connection), which is the best it can do. Whatever the real server
answers is recorded in :attr:`answers`; when it is a ``welcome``, the relay keeps that session:
it is logged in as the visitor, and :attr:`stolen` collects what the real server delivers to it.

    relay = await LoginRelay(real_url, cert=own, ca=ca_file).start()
    ...victim dials relay.url...
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from signaling.auth import tls_server_end_point
from tests.support.tls import IssuedCert


@dataclass
class LoginRelay:
    real_url: str  # wss://127.0.0.1:PORT of the real server
    cert: IssuedCert  # what the relay presents to its visitors
    ca: str  # the CA file the relay itself trusts for the real server
    host: str = "localhost"  # the name visitors dial the relay by
    rewrite: bool = False  # put the real server's host and binding into the relayed login
    real_host: str = "127.0.0.1"  # what ``rewrite`` writes as the host
    logins_seen: list[dict[str, Any]] = field(default_factory=list)  # from the visitors
    answers: list[dict[str, Any]] = field(default_factory=list)  # the real server's answers
    stolen: list[dict[str, Any]] = field(default_factory=list)  # delivered to a stolen session
    frames_in: int = 0  # every frame any visitor sent (0: nobody got past TLS)
    port: int = 0
    _server: Server | None = None
    _upstreams: list[ClientConnection] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"wss://{self.host}:{self.port}"

    async def start(self) -> LoginRelay:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert.cert, self.cert.key)
        self._server = await serve(self._visit, "127.0.0.1", 0, ssl=context, compression=None)
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for upstream in self._upstreams:
            await upstream.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _visit(self, visitor: ServerConnection) -> None:
        trust = ssl.create_default_context(cafile=self.ca)
        upstream = await connect(self.real_url, ssl=trust, compression=None)
        self._upstreams.append(upstream)
        real_binding = _binding_of(upstream)
        try:
            await visitor.send(await upstream.recv())  # the real challenge, unchanged
            text = await visitor.recv()
            self.frames_in += 1
            login = json.loads(text)
            self.logins_seen.append(dict(login))
            if self.rewrite:
                login["host"] = self.real_host
                login["binding"] = base64.b64encode(real_binding).decode()
            await upstream.send(json.dumps(login))
            answer = json.loads(await upstream.recv())
            self.answers.append(answer)
            await visitor.send(json.dumps(answer))
            if answer["type"] == "welcome":  # logged in as the visitor: keep the session
                task = asyncio.create_task(self._keep(upstream))
                self._tasks.add(task)
        except ConnectionClosed:
            pass

    async def _keep(self, upstream: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for text in upstream:
                self.stolen.append(json.loads(text))


def _binding_of(ws: ClientConnection) -> bytes:
    ssl_object = ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return tls_server_end_point(der)
