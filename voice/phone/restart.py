"""ICE restarts of one connected call: new ICE credentials and candidates, same SRTP keys.

A restart is an offer and an answer of one generation, each an ``ice`` message
(voice.call.messages.Ice) sealed with the call's own key, so only the peer can move the media
elsewhere:

    A: ice {generation g, answer: false, ufrag, pwd, candidates}   (its media watch found the
                                                                   audio gone, or it moved)
    B: ice {generation g, answer: true,  ufrag, pwd, candidates}
    both run the checks on the new connection; the media session swaps it in on success.

An offer must be of a higher generation than any seen. Two offers that cross (both sides found
the audio gone): the controlling side (the caller) keeps its own and ignores the peer's while
its own is in flight; the controlled side gives its own up and answers. An answer counts only
for the offer we have out; anything else is stale and ignored. Without explicit answers, an
offer of the peer's could pass for the answer to ours, and both sides would check against a
connection the other never started (this happened: a network outage delays one side's offer).

Each restart gathers afresh: this machine's addresses as they are now (it may have moved) and
the ICE servers with current credentials (``inputs``). An offer that gets no answer (the
signaling server is unreachable too) is replaced by a new one when the media watch asks again;
the call ends only when its reconnect window runs out. The peer cannot make us gather more often
than every :data:`PEER_MIN_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from voice.call import messages as m
from voice.errors import VoiceError
from voice.media.iceservers import IceServers
from voice.media.session import MediaSession

__all__ = ["IceRestarter"]

log = logging.getLogger("voice.phone")
STALE_AFTER = 5.0  # an offer of ours unanswered this long no longer blocks the peer's offers
PEER_MIN_INTERVAL = 2.0  # seconds between two offers of the peer's that we answer
Inputs = tuple[Sequence[str] | None, IceServers | None]


class IceRestarter:
    def __init__(
        self,
        session: Callable[[], MediaSession | None],
        send: Callable[[m.Ice], None],
        inputs: Callable[[], Awaitable[Inputs]],
        *,
        controlling: bool,
        timeout: float,
        name: str,
    ) -> None:
        self._session = session
        self._send = send
        self._inputs = inputs
        self._controlling = controlling
        self._timeout = timeout
        self._name = name
        self.generation = 0  # the highest generation seen or offered
        self.completed = 0  # restarts that swapped a new path in
        self._offered: int | None = None  # our offer waiting for its answer
        self._offered_at = 0.0
        self._checking: int | None = None  # a generation whose checks are running
        self._peer_offer_at: float | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Our side wants a new path (no audio for a while, or a new local address)."""
        try:
            async with self._lock:
                session = self._session()
                now = asyncio.get_running_loop().time()
                if session is None or self._in_flight(now):
                    return
                generation = self.generation + 1
                if generation > m.MAX_ICE_GENERATION:
                    return
                if not await self._send_parameters(session, generation, answer=False):
                    return
                self._offered, self._offered_at = generation, now
            log.info("call %s: ICE restart %d offered", self._name, generation)
        except Exception:  # a restart must never take the call down with it
            log.exception("call %s: ICE restart failed", self._name)

    async def receive(self, message: m.Ice) -> None:
        """An offer or an answer of the peer's."""
        try:
            if message.answer:
                await self._on_answer(message)
            else:
                await self._on_offer(message)
        except Exception:
            log.exception("call %s: ICE restart failed", self._name)

    async def _on_offer(self, message: m.Ice) -> None:
        generation = message.generation
        async with self._lock:
            session = self._session()
            now = asyncio.get_running_loop().time()
            if session is None or (generation <= self.generation and self._offered != generation):
                return  # stale, or a duplicate
            if self._controlling and self._in_flight(now):
                log.info("call %s: ICE restart %d ignored: ours first", self._name, generation)
                self.generation = max(self.generation, generation)
                return
            if self._peer_offer_at is not None and now - self._peer_offer_at < PEER_MIN_INTERVAL:
                log.info("call %s: ICE restart %d ignored: too soon", self._name, generation)
                return
            self._peer_offer_at = now
            if not await self._send_parameters(session, generation, answer=True):
                return
            self._offered, self._checking = None, generation  # ours (if any) is given up
        await self._check(session, message)

    async def _on_answer(self, message: m.Ice) -> None:
        async with self._lock:
            session = self._session()
            if session is None or message.generation != self._offered:
                return  # not the answer to the offer we have out
            self._offered, self._checking = None, message.generation
        await self._check(session, message)

    async def _check(self, session: MediaSession, message: m.Ice) -> None:
        generation = message.generation
        try:
            await session.complete_restart(message.ice, timeout=self._timeout)
        except (VoiceError, OSError, TimeoutError) as exc:
            why = type(exc).__name__
            log.info("call %s: ICE restart %d failed (%s)", self._name, generation, why)
            return
        finally:
            if self._checking == generation:
                self._checking = None
        self.completed += 1
        log.info("call %s: ICE restart %d connected", self._name, generation)

    def _in_flight(self, now: float) -> bool:
        """Checks of ours are running, or our offer is recent enough to wait for."""
        waiting = self._offered is not None and now - self._offered_at < STALE_AFTER
        return self._checking is not None or waiting

    async def _send_parameters(
        self, session: MediaSession, generation: int, *, answer: bool
    ) -> bool:
        """Gather a new connection for ``generation`` and send its parameters."""
        try:
            addresses, servers = await self._inputs()
        except (VoiceError, OSError, TimeoutError) as exc:
            log.info("call %s: no fresh ICE servers (%s)", self._name, type(exc).__name__)
            addresses, servers = None, None  # the call's own, as they were
        try:
            params: dict[str, Any] = await session.prepare_restart(
                ice_servers=servers, host_addresses=addresses
            )
        except (VoiceError, OSError, TimeoutError) as exc:
            log.info("call %s: cannot gather for a restart (%s)", self._name, type(exc).__name__)
            return False
        self.generation = max(self.generation, generation)
        self._send(m.Ice(generation, params, answer=answer))
        return True
