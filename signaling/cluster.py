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
  drops a repeated id and acknowledges what it did (those of one loop iteration in one
  message per origin). The forwards of one loop iteration go out together, in order: one
  script finds their owners and publishes one message per receiving instance. ``sent``
  means it was handed to the recipient's connection. Offline, a full queue, no bus, or no
  acknowledgement within :data:`ACK_TIMEOUT` each give the sender an ``error`` (``offline``
  or ``queue_full``, its ``id`` the send's) and the envelope is not retried; after a timeout
  the message says that delivery was not confirmed (it may have arrived: at most once, not
  exactly once).
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
    Envelopes,
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
ROUTE_BATCH = 256  # envelopes in one route script at most
ROUTE_BATCH_BYTES = 1 << 20  # and their encoded size (a batch may exceed it by one envelope)


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
        per_ip_limit: int | None = None,
        **bus_options: Any,
    ) -> None:
        """``per_ip_limit``: connections from one address on all the instances together; by
        default the router's, which may have been lowered to fit this instance's descriptors
        (:func:`~signaling.admission.fit_to_fd_limit`): the server passes the configured one."""
        self.router = router
        self.per_ip_limit = per_ip_limit or router.config.max_connections_per_ip
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
        self._pending: dict[str, Forward] = {}  # published, awaiting their acknowledgement
        self._outbox: list[Forward] = []  # forwards of this loop iteration, not yet published
        self._timers: dict[str, asyncio.TimerHandle] = {}  # by a batch's first id
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
        for timer in self._timers.values():
            timer.cancel()
        await self.bus.stop()

    def carry_out(self, action: Forward | Claim) -> None:
        if isinstance(action, Forward):
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self._flush_forwards)
            self._outbox.append(action)
        else:
            self._spawn(self._claim(action))

    def left(self, left: Left) -> None:
        """A logged-in session ended: release its presence, keep the user's allowances."""
        if self.bus.up:
            self._spawn(self._quietly(self.bus.release(left.user, left.session, _kept(left))))

    async def admit(self, net: str) -> bool | None:
        """Count a connection from ``net`` on the whole deployment: True (counted; call
        :meth:`unadmit` when it closes), False (the address is at its limit everywhere), None
        (no bus: not counted; the local limit still applies). If we time out or are
        cancelled meanwhile, a count that lands afterwards is taken back."""
        counting = asyncio.ensure_future(self.bus.admit(net, self.per_ip_limit))
        try:
            return await asyncio.wait_for(asyncio.shield(counting), self._ack_timeout)
        except BusUnavailable:
            return None
        except TimeoutError:
            counting.add_done_callback(lambda done: self._uncount(net, done))
            return None
        except asyncio.CancelledError:  # the connection's handler went away
            counting.add_done_callback(lambda done: self._uncount(net, done))
            raise

    def _uncount(self, net: str, counting: asyncio.Future[bool]) -> None:
        """A count nobody will :meth:`unadmit` (its caller gave up): undo it if it landed."""
        if not counting.cancelled() and counting.exception() is None and counting.result():
            self.unadmit(net)

    def unadmit(self, net: str) -> None:
        if self.bus.up:
            self._spawn(self._quietly(self.bus.unadmit(net)))

    def _flush_forwards(self) -> None:
        """Publish the forwards of one loop iteration, in order, in as few route scripts as
        their number and size allow (each one message per receiving instance)."""
        outbox, self._outbox = self._outbox, []
        batch: list[tuple[str, str, str]] = []  # (id, user, envelope)
        size = 0
        for f in outbox:
            envelope_id = f"{self.instance}:{next(self._ids)}"
            envelope = encode(Envelope(envelope_id, self.instance, f.to, f.from_user, f.body))
            self._pending[envelope_id] = f
            batch.append((envelope_id, f.to, envelope))
            size += len(envelope)
            if len(batch) >= ROUTE_BATCH or size >= ROUTE_BATCH_BYTES:
                self._spawn(self._route(batch))
                batch, size = [], 0
        if batch:
            self._spawn(self._route(batch))

    async def _route(self, batch: list[tuple[str, str, str]]) -> None:
        """One route script for ``batch``: offline at once for a user nobody holds, then each
        acknowledgement answers its sender; unconfirmed after ``ack_timeout``: unreachable."""
        ids = [envelope_id for envelope_id, _, _ in batch]
        loop = asyncio.get_running_loop()
        self._timers[ids[0]] = loop.call_later(self._ack_timeout, self._expire, ids)
        try:
            async with asyncio.timeout(self._ack_timeout):
                published = await self.bus.route_many([(to, env) for _, to, env in batch])
        except (BusUnavailable, TimeoutError):
            self._expire(ids)
            return
        except asyncio.CancelledError:  # stopping: nobody is answered any more
            timer = self._timers.pop(ids[0], None)
            if timer is not None:
                timer.cancel()
            for envelope_id in ids:
                self._pending.pop(envelope_id, None)
            raise
        for envelope_id, ok in zip(ids, published, strict=True):
            if not ok:
                self._answer(envelope_id, Outcome.OFFLINE)

    def _expire(self, ids: list[str]) -> None:
        """No acknowledgement in time (or no bus): those still pending were not confirmed."""
        timer = self._timers.pop(ids[0], None)
        if timer is not None:
            timer.cancel()  # when called before its time
        for envelope_id in ids:
            self._answer(envelope_id, Outcome.UNREACHABLE)

    def _answer(self, envelope_id: str, outcome: Outcome) -> None:
        """The one answer for a published envelope (later ones for the same id are ignored)."""
        f = self._pending.pop(envelope_id, None)
        if f is not None:
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
        if isinstance(message, Envelopes):
            for envelope in message.items:
                self._deliver(envelope)
        elif isinstance(message, Envelope):
            self._deliver(message)
        elif isinstance(message, Acks):
            for envelope_id, outcome in message.items:
                self._answer(envelope_id, outcome)
        elif isinstance(message, Kick):
            actions, handed = self.router.kick(message.user, message.session)
            self._apply(actions)
            reply = Kicked(message.id, handed.encode() if handed is not None else None)
            self._spawn(self._quietly(self.bus.publish(message.origin, encode(reply))))
        else:
            _settle(self._kicks.get(message.id), message.allowances)

    def _deliver(self, m: Envelope) -> None:
        if not self.seen.first(m.id):
            return  # at most once: a copy of an envelope already handled
        actions, outcome = self.router.deliver_remote(m.from_user, m.to, m.body)
        self._apply(actions)
        self._acknowledge(m.origin, m.id, outcome)

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
        """Connected (again): register our sessions; close those another instance took. A
        user claimed here since ``sessions`` was taken keeps its claim (the script leaves
        presence of this instance alone), so a stale session of ours never overwrites it."""
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
