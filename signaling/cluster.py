"""Several instances acting as one server: carries the router's cluster actions over the bus.

The adapter (:mod:`signaling.server`) hands this the router's :class:`~signaling.handoff.Forward`
and :class:`~signaling.handoff.Claim` actions and the sessions that left, and applies the
actions that come back. What it guarantees:

* **Presence and newest session wins.** A login claims the user in Redis atomically; an older
  session on another live instance is told (``kick``) and closed there with ``replaced``, and
  its token levels come back with the answer (:class:`~signaling.handoff.Allowances`). A
  killed instance stops renewing its heartbeat: its users count as offline after
  :data:`~signaling.bus.INSTANCE_TTL` and are free to log in anywhere at once.
* **Delivery: at most once, and the sender always gets an answer.** An envelope for a user on
  another instance is published once (never re-sent) with a unique id; the receiving instance
  drops a repeated id and acknowledges what it did. ``sent`` means it was handed to the
  recipient's connection. Offline, a full queue, no bus, or no acknowledgement within
  :data:`ACK_TIMEOUT` each give the sender an ``error`` (``offline`` or ``queue_full``, its
  ``id`` the send's) and the envelope is not retried; after a timeout the message says that
  delivery was not confirmed (it may have arrived: at most once, not exactly once).
* **Limits.** The per-IP connection limit counts connections on every instance (Redis
  counters, rebuilt after a Redis restart, swept when an instance dies); the per-user rates
  move with the user (kick answers and the ``allow:`` key).
* **Redis down.** Sessions on one instance keep talking to each other; envelopes to other
  instances and new logins get errors (``offline``; ``internal``, which clients retry) until
  the bus is back, when every instance registers its sessions again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from signaling.bus import BusUnavailable, RedisBus
from signaling.busmessages import (
    Acks,
    BusMessage,
    BusMessageError,
    Envelope,
    Kick,
    Kicked,
    SeenIds,
    encode,
    parse,
)
from signaling.handoff import Allowances, Claim, Forward, Left, Outcome
from signaling.router import Action, Router

log = logging.getLogger("signaling.cluster")

ACK_TIMEOUT = 2.0  # s for another instance to acknowledge an envelope
KICK_TIMEOUT = 1.0  # s for the old session's instance to confirm it closed it
CLAIM_TIMEOUT = 3.0  # s for a login's claim in all


class Cluster:
    """The cluster side of one instance: ``instance`` (random per run) and its ``bus``."""

    def __init__(
        self,
        router: Router,
        url: str,
        apply: Callable[[list[Action]], None],
        *,
        prefix: str = "voice:",
        ack_timeout: float = ACK_TIMEOUT,
        **bus_options: Any,
    ) -> None:
        self.router = router
        self.instance = secrets.token_hex(8)
        self.bus = RedisBus(
            url,
            self.instance,
            on_message=self._on_message,
            on_resync=self._resync,
            prefix=prefix,
            **bus_options,
        )
        self.seen = SeenIds()
        self._apply = apply
        self._ack_timeout = ack_timeout
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Outcome]] = {}
        self._kicks: dict[str, asyncio.Future[str | None]] = {}
        self._acks: dict[str, list[tuple[str, Outcome]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.bus.start()

    async def stop(self) -> None:
        """Let the last releases reach Redis (briefly), then disconnect."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.stop()

    def carry_out(self, action: Forward | Claim) -> None:
        if isinstance(action, Forward):
            self._spawn(self._forward(action))
        else:
            self._spawn(self._claim(action))

    def left(self, left: Left) -> None:
        """A logged-in session ended: release its presence, keep the user's allowances."""
        if self.bus.up:
            self._spawn(self._quietly(self.bus.release(left.user, left.session, _kept(left))))

    async def admit(self, net: str) -> bool | None:
        """Count a connection from ``net`` on the whole deployment: True (counted; call
        :meth:`unadmit` when it closes), False (the address is at its limit everywhere), None
        (no bus: not counted; the local limit still applies)."""
        try:
            limit = self.router.config.max_connections_per_ip
            return await asyncio.wait_for(self.bus.admit(net, limit), self._ack_timeout)
        except (BusUnavailable, TimeoutError):
            return None

    def unadmit(self, net: str) -> None:
        if self.bus.up:
            self._spawn(self._quietly(self.bus.unadmit(net)))

    async def _forward(self, f: Forward) -> None:
        envelope_id = f"{self.instance}:{next(self._ids)}"
        payload = encode(Envelope(envelope_id, self.instance, f.to, f.from_user, f.body))
        answer = self._pending[envelope_id] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._ack_timeout):
                published = await self.bus.route(f.to, payload)
                outcome = await answer if published else Outcome.OFFLINE
        except (BusUnavailable, TimeoutError):
            outcome = Outcome.UNREACHABLE
        finally:
            del self._pending[envelope_id]
        self._apply(self.router.forwarded(f.session, f.msg_id, f.to, outcome))

    async def _claim(self, c: Claim) -> None:
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT):
                old, alive, stored = await self.bus.claim(c.user, c.session)
                handed = Allowances.decode(stored)
                if old is not None and alive:
                    instance, _, session = old.partition(" ")
                    if instance != self.instance and session.isdigit():
                        kicked = await self._kick(instance, c.user, int(session))
                        handed = Allowances.decode(kicked) or handed
        except (BusUnavailable, TimeoutError):
            self._apply(self.router.claim_failed(c.session))
            return
        self._apply(self.router.claimed(c.session, handed))

    async def _kick(self, instance: str, user: str, session: int) -> str | None:
        """Tell ``instance`` to close ``user``'s ``session``; its allowances, or None if it did
        not answer in time (it is closed anyway once that instance sees the kick)."""
        kick_id = f"{self.instance}:k{next(self._ids)}"
        answer = self._kicks[kick_id] = asyncio.get_running_loop().create_future()
        try:
            await self.bus.publish(instance, encode(Kick(kick_id, self.instance, user, session)))
            return await asyncio.wait_for(answer, KICK_TIMEOUT)
        except TimeoutError:
            log.warning("kick_unanswered", extra={"fields": {"instance": instance}})
            return None
        finally:
            del self._kicks[kick_id]

    def _on_message(self, data: bytes) -> None:
        try:
            message: BusMessage = parse(data)
        except BusMessageError as exc:
            log.warning("bad_bus_message", extra={"fields": {"error": str(exc)}})
            return
        if isinstance(message, Envelope):
            if not self.seen.first(message.id):
                return  # at most once: a copy of an envelope already handled
            m = message
            actions, outcome = self.router.deliver_remote(m.from_user, m.to, m.body)
            self._apply(actions)
            self._acknowledge(m.origin, m.id, outcome)
        elif isinstance(message, Acks):
            for envelope_id, outcome in message.items:
                _settle(self._pending.get(envelope_id), outcome)
        elif isinstance(message, Kick):
            actions, handed = self.router.kick(message.user, message.session)
            self._apply(actions)
            reply = Kicked(message.id, handed.encode() if handed is not None else None)
            self._spawn(self._quietly(self.bus.publish(message.origin, encode(reply))))
        else:
            _settle(self._kicks.get(message.id), message.allowances)

    def _acknowledge(self, origin: str, envelope_id: str, outcome: Outcome) -> None:
        """Queue an acknowledgement; all those of one loop iteration go as one message."""
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._flush_acks)
        self._acks.setdefault(origin, []).append((envelope_id, outcome))

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for origin, items in acks.items():
            for start in range(0, len(items), 1_000):
                message = encode(Acks(tuple(items[start : start + 1_000])))
                self._spawn(self._quietly(self.bus.publish(origin, message)))

    async def _resync(self) -> None:
        """Connected (again): register our sessions; close those another instance took."""
        sessions = self.router.sessions_by_user()
        lost = await self.bus.resync(sessions, self.router.connections_per_address())
        for user in set(lost):
            for owner, session in sessions:
                if owner == user:
                    self._apply(self.router.kick(user, session)[0])
        _info("resynced", sessions=len(sessions), lost=len(lost))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(operation: Coroutine[Any, Any, object]) -> None:
        """Best effort: a lost bus is the connection loop's business."""
        with contextlib.suppress(BusUnavailable):
            await operation


def _kept(left: Left) -> str:
    """What an ended session leaves for the user's next login: its directory and TURN
    levels. Not the message bucket: a new session starts a fresh one, as on one instance."""
    a = left.allowances
    return Allowances(None, a.directory, a.turn, a.at).encode()


def _settle(future: asyncio.Future[Any] | None, value: object) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _info(event: str, **fields: object) -> None:
    log.info(event, extra={"fields": fields})
