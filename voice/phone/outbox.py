"""A call's outgoing messages: sealed in order and handed to the signaling server by one task.

The call's machine never waits for the network: :meth:`CallOutbox.put` seals a message at once
(:class:`~voice.call.outbound.CallSealer`: so the call's keys may be erased right after the
last one) and queues it; the sender task sends each one in order;
a failure becomes an event for the machine (``on_failure``). :meth:`CallOutbox.close` lets the
last message (hangup, cancel, error) go out, then stops the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from voice.call import events as ev
from voice.call import messages as m
from voice.call.outbound import CallSealer
from voice.errors import RequestRefused, SignalingClientError, VoiceError

__all__ = ["CallOutbox", "send_failure_event"]

log = logging.getLogger("voice.phone")


class CallOutbox:
    def __init__(
        self,
        sealer: CallSealer,
        send: Callable[[bytes], Awaitable[None]],
        on_failure: Callable[[ev.LocalEvent], object],
        *,
        name: str,
    ) -> None:
        self._sealer = sealer
        self._send = send
        self._on_failure = on_failure
        self._name = name
        self._queue: asyncio.Queue[tuple[bytes, asyncio.Future[None], bool] | None]
        self._queue = asyncio.Queue()
        self._queued = 0
        self.first_send: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Resolves once the first message reached the server (or fails with why it did not)."""
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"send-{self._name}")

    def put(self, message: m.Message, *, best_effort: bool = False) -> None:
        """Seal and queue ``message``. A ``best_effort`` one (an ICE restart, tried again
        later anyway) that cannot be sent is logged, not turned into an event that ends the
        call."""
        try:
            body = self._sealer.seal(message)  # first: if it raises, nothing is queued
        except Exception as exc:
            if not self.first_send.done() and self._queued == 0:  # the dialer waits on it
                self.first_send.set_exception(exc)
                self.first_send.exception()  # retrieved: the dialer may be gone
            raise
        fut = self.first_send
        if fut.done() or self._queued > 0:
            fut = asyncio.get_running_loop().create_future()
        self._queued += 1
        self._queue.put_nowait((body, fut, best_effort))

    def close(self) -> None:
        """Send what is queued, then stop."""
        self._queue.put_nowait(None)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            body, fut, best_effort = item
            try:
                await self._send(body)
            except (VoiceError, TimeoutError, OSError) as exc:
                log.info("call %s: sending failed (%s)", self._name, type(exc).__name__)
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: nobody may be waiting on it
                if not best_effort:
                    self._on_failure(send_failure_event(exc))
            else:
                if not fut.done():
                    fut.set_result(None)


def send_failure_event(exc: BaseException) -> ev.LocalEvent:
    """Our own session ended (SignalingLost: a connected call survives it), or the server
    refused or never confirmed the envelope (PeerVanished: the peer is unreachable)."""
    if isinstance(exc, SignalingClientError) and not isinstance(exc, RequestRefused):
        return ev.SignalingLost()
    return ev.PeerVanished()
