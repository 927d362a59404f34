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
  drops a repeated id and acknowledges what it did. The forwards and acknowledgements of
  :data:`FLUSH_DELAY` go out together, in order: one script finds the envelopes' owners and
  publishes one message per receiving instance (:mod:`signaling.busmessages`). ``sent``
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
  the bus is back, when every instance registers its sessions again, releases those that
  ended meanwhile and forgets any that Redis still holds for it but it no longer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from signaling.bus import BusUnavailable, RedisBus
from signaling.busmessages import (
    Batch,
    BusMessage,
    BusMessageError,
    Kick,
    Kicked,
    SeenIds,
    ack_lines,
    encode_kick,
    envelope_line,
    header,
    parse,
)
from signaling.handoff import Allowances, Claim, Forward, Left, Outcome
from signaling.resp import Reply
from signaling.router import Action, Router

log = logging.getLogger("signaling.cluster")

ACK_TIMEOUT = 2.0  # s for another instance to acknowledge an envelope
KICK_TIMEOUT = 1.0  # s for the old session's instance to confirm it closed it
CLAIM_TIMEOUT = 3.0  # s for a login's claim in all
ROUTE_BATCH = 256  # envelopes in one flush script at most
ROUTE_BATCH_BYTES = 1 << 20  # and their encoded size (a batch may exceed it by one envelope)
ACKS_PER_LINES = 2_048  # acknowledgements of one kind for one origin in one message
UNRELEASED_KEPT = 100_000  # ended sessions kept for release while the bus is down, at most
# Seconds a forward or an acknowledgement waits for others to share its flush script: a bus
# round trip costs far more CPU than an envelope (a Redis command, a message to parse on each
# side), so at moderate rates batches that would hold one envelope hold several, for at most
# 2 ms more on the way there and 2 ms on the acknowledgement's way back.
FLUSH_DELAY = 0.002


class Admission:
    """One connection's place in the per-address count that all instances share."""

    __slots__ = ("closed", "counted", "epoch", "full", "net")

    def __init__(self, net: str, epoch: int) -> None:
        self.net = net
        self.epoch = epoch  # the cluster's resyncs when it was taken
        self.counted = False  # Redis holds it in this instance's share
        self.full = False  # refused: the address is at its limit on the whole deployment
        self.closed = False


class Cluster:
    """The cluster side of one instance: ``instance`` (random per run) and its ``bus``."""

    def __init__(
        self,
        router: Router,
        url: str,
        apply: Callable[[list[Action]], None],
        *,
        apply_claimed: Callable[[list[Action]], None] | None = None,
        prefix: str = "voice:",
        ack_timeout: float = ACK_TIMEOUT,
        flush_delay: float = FLUSH_DELAY,
        per_ip_limit: int | None = None,
        **bus_options: Any,
    ) -> None:
        """``apply`` carries out the router's actions that come back; ``apply_claimed``, if
        given, those of a finished login (the server counts it as no longer a handshake).
        ``per_ip_limit``: connections from one address on all the instances together; by
        default the router's, which may have been lowered to fit this instance's descriptors
        (:func:`~signaling.admission.fit_to_fd_limit`): the server passes the configured one."""
        self.router = router
        self.per_ip_limit = per_ip_limit or router.config.max_connections_per_ip
        # New for every run, never configured: receivers drop any envelope id not above the
        # last they took from an instance (busmessages.SeenIds), and a restarted instance
        # counts from 1 again.
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
        self._apply_claimed = apply_claimed or apply
        self._ack_timeout = ack_timeout
        self._flush_delay = flush_delay
        self._header = header(self.instance)
        self._ids = itertools.count(1)  # envelope ids: consecutive within one flush script
        self._kick_ids = itertools.count(1)
        self._pending: dict[int, Forward] = {}  # published, awaiting their acknowledgement
        self._timers: dict[int, asyncio.TimerHandle] = {}  # by a flush's first envelope id
        self._outbox: list[Forward] = []  # forwards not yet published (the next flush)
        # Acknowledgements for the next flush, by origin: delivered ids, refused ones.
        self._acks: dict[str, tuple[list[int], list[tuple[int, Outcome]]]] = {}
        self._flush_due = False
        self._kicks: dict[str, asyncio.Future[str | None]] = {}
        # Sessions that ended and connections that closed in this loop pass: one release and
        # one unadmit script for all of them (an instance losing thousands of clients at once
        # would otherwise queue a script for each, and its heartbeat behind them).
        self._departures: list[tuple[str, int, str]] = []
        self._closed: Counter[str] = Counter()
        # Connections that went through admit and are open; the resyncs so far (an admission
        # taken before the last one is no longer this instance's to count out on landing).
        self._admitted: set[Admission] = set()
        self._epoch = 0
        self._departing: asyncio.Handle | None = None
        # Sessions whose release could not reach Redis (the bus was down or dropped midway):
        # released on reconnecting, so that neither their presence nor their allowances are
        # lost (the user's token levels would otherwise start full on the next login).
        self._unreleased: list[tuple[str, int, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_flush: asyncio.Future[bytes] | None = None  # what stop() waits for

    async def start(self) -> None:
        await self.bus.start()

    async def stop(self) -> None:
        """Let the last releases reach Redis (briefly), then disconnect."""
        self._depart_now()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()  # stopping: nobody is answered any more
        self._outbox.clear()
        if self._acks and self.bus.up:  # envelopes delivered here: tell their senders
            with contextlib.suppress(Exception):
                self._flush()
                if self._last_flush is not None:
                    await asyncio.wait_for(self._last_flush, 1.0)
        self._acks.clear()
        await self.bus.stop()
        if self._departing is not None:  # a close seen while stopping: the bus is gone
            self._departing.cancel()
            self._departing = None
        self._departures.clear()
        self._unreleased.clear()
        self._closed.clear()

    def carry_out(self, action: Forward | Claim) -> None:
        if isinstance(action, Forward):
            self._outbox.append(action)
            self._flush_soon()
        else:
            self._depart_now()  # a release of this pass reaches Redis before the claim
            self._spawn(self._claim(action))

    def left(self, left: Left) -> None:
        """A logged-in session ended: release its presence, keep the user's allowances (when
        the bus is back, if it is down)."""
        self._departures.append((left.user, left.session, _kept(left)))
        self._depart_soon()

    async def admit(self, net: str) -> Admission:
        """Count a connection from ``net`` on the whole deployment; pass what this returns to
        :meth:`unadmit` when the connection closes, whatever happened. ``full``: the address
        is at its limit everywhere. Not counted for now if the bus is down or slow to answer
        (the local limit still applies): a count that lands later, or the registration of
        this instance's connections after a reconnection, counts it from then on."""
        self._depart_now()  # connections that closed in this pass are counted out first
        admission = Admission(net, self._epoch)
        self._admitted.add(admission)
        try:
            counting = self.bus.admit(net, self.per_ip_limit)
        except BusUnavailable:
            return admission
        counting.add_done_callback(functools.partial(self._counted, admission))
        try:
            await asyncio.wait_for(asyncio.shield(counting), self._ack_timeout)
        except (BusUnavailable, TimeoutError):
            pass
        except asyncio.CancelledError:  # the connection's handler went away
            self.unadmit(admission)
            raise
        return admission

    def _counted(self, admission: Admission, counting: asyncio.Future[Reply]) -> None:
        """Redis answered ``admission``'s count (perhaps after its connection closed)."""
        if counting.cancelled() or counting.exception() is not None:
            return  # not counted, or lost with the connection: a resync sets the counts
        if counting.result() != 1:
            admission.full = True
        elif admission.epoch != self._epoch:
            pass  # a resync replaced this instance's counts since: they hold it or not
        elif admission.closed:
            self._count_out(admission.net)  # closed before the count landed
        else:
            admission.counted = True

    def unadmit(self, admission: Admission) -> None:
        """``admission``'s connection closed: count it out wherever it was counted."""
        if admission.closed:
            return
        admission.closed = True
        self._admitted.discard(admission)
        if admission.counted:
            self._count_out(admission.net)

    def _count_out(self, net: str) -> None:
        if self.bus.up:  # else the reconnection replaces this instance's counts anyway
            self._closed[net] += 1
            self._depart_soon()

    def _share(self) -> dict[str, int]:
        """This instance's open connections by address group, for Redis to hold from now on
        (called as the script that sets them is queued): each counts from here, counts and
        count-outs not yet queued are superseded, those queued went before."""
        self._epoch += 1
        self._closed.clear()
        for admission in self._admitted:
            admission.counted = True
        return dict(Counter(a.net for a in self._admitted))

    def _depart_soon(self) -> None:
        if self._departing is None:
            self._departing = asyncio.get_running_loop().call_soon(self._depart)

    def _depart_now(self) -> None:
        """What left in this pass goes before a count or claim that came after it."""
        if self._departing is not None:
            self._departing.cancel()
            self._depart()

    def _depart(self) -> None:
        """The releases and uncounted connections of this loop pass, in one script each."""
        self._departing = None
        departures, self._departures = self._departures, []
        closed, self._closed = self._closed, Counter()
        if closed:
            with contextlib.suppress(BusUnavailable):  # down: a resync sets the counts
                self._spawn(self._quietly(self.bus.unadmit(dict(closed))))
        if self.bus.up and self._unreleased:  # an error reply kept some, the bus stayed up
            departures, self._unreleased = self._unreleased + departures, []
        if departures:
            if self.bus.up:
                self._spawn(self._release(departures))
            else:
                self._keep_unreleased(departures)

    async def _release(self, departures: list[tuple[str, int, str]]) -> None:
        try:
            await self.bus.release(departures)
        except BusUnavailable:  # perhaps partly done: releasing again changes nothing
            self._keep_unreleased(departures)

    def _keep_unreleased(self, departures: list[tuple[str, int, str]]) -> None:
        """Keep releases for the reconnection, the newest :data:`UNRELEASED_KEPT` (presence of
        any dropped is still found stale then; only their allowances are lost)."""
        self._unreleased += departures
        del self._unreleased[:-UNRELEASED_KEPT]

    def _flush_soon(self) -> None:
        """Flush after :data:`FLUSH_DELAY` (whatever else arrives meanwhile goes along)."""
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(self._flush_delay, self._flush)

    def _flush(self) -> None:
        """Publish the forwards and acknowledgements that waited, in order, in as few flush
        scripts as their number and size allow (one message per instance each)."""
        self._flush_due = False
        outbox, self._outbox = self._outbox, []
        acks, self._acks = self._acks, {}
        # One chunk per origin per script: an origin's message then holds at most
        # ROUTE_BATCH envelope lines and one chunk of acknowledgements (< MAX_LINES).
        chunks = {origin: _ack_chunks(*done) for origin, done in acks.items()}
        rounds = [
            [(origin, c[i]) for origin, c in chunks.items() if i < len(c)]
            for i in range(max(map(len, chunks.values()), default=0))
        ]
        lines: list[str] = []
        size = n = 0
        for f in outbox:
            n = next(self._ids)
            line = envelope_line(n, f.to, f.from_user, f.body)
            self._pending[n] = f
            lines.append(line)
            size += len(line)
            if len(lines) >= ROUTE_BATCH or size >= ROUTE_BATCH_BYTES:
                self._publish(n - len(lines) + 1, lines, rounds.pop(0) if rounds else [])
                lines, size = [], 0
        if lines:
            self._publish(n - len(lines) + 1, lines, rounds.pop(0) if rounds else [])
        for pairs in rounds:  # acknowledgements left over: a script of their own each
            self._publish(n + 1, [], pairs)

    def _publish(self, first: int, lines: list[str], acks: list[tuple[str, str]]) -> None:
        """One flush script: envelopes ``first``.. (``lines``) and ``acks``. A user nobody
        holds is answered offline at once, every other envelope by its acknowledgement; one
        still unconfirmed after ``ack_timeout`` as unreachable."""
        count = len(lines)
        try:
            published = self.bus.flush(self._header, "\n".join(lines), acks)
        except BusUnavailable:
            self._expire(first, count)
            return
        self._last_flush = published
        if count:
            loop = asyncio.get_running_loop()
            self._timers[first] = loop.call_later(self._ack_timeout, self._expire, first, count)
        published.add_done_callback(functools.partial(self._published, first, count))

    def _published(self, first: int, count: int, done: asyncio.Future[bytes]) -> None:
        if done.cancelled() or done.exception() is not None:  # no bus: not confirmed
            self._expire(first, count)
            return
        out: list[Action] = []
        for n, flag in enumerate(done.result()[:count], start=first):
            if flag != 0x31:  # b"1"
                self._answer(n, Outcome.OFFLINE, out)
        self._apply(out)

    def _expire(self, first: int, count: int) -> None:
        """No acknowledgement in time (or no bus): those still pending were not confirmed."""
        if count == 0:  # a script of acknowledgements only: no envelope, no timer of its own
            return
        timer = self._timers.pop(first, None)
        if timer is not None:
            timer.cancel()  # when called before its time
        out: list[Action] = []
        for n in range(first, first + count):
            self._answer(n, Outcome.UNREACHABLE, out)
        self._apply(out)

    def _answer(self, envelope_id: int, outcome: Outcome, out: list[Action]) -> None:
        """The one answer for a published envelope (later ones for the same id are ignored)."""
        f = self._pending.pop(envelope_id, None)
        if f is None:
            return
        try:  # a failure must not keep the answers of the batch's other envelopes back
            out += self.router.forwarded(f.session, f.msg_id, f.to, outcome)
        except Exception:
            log.exception("answer_failed", extra={"fields": {"session": f.session}})

    async def _claim(self, c: Claim) -> None:
        """Make the login ``c`` its user's one session: claim the user in Redis, close the
        older session (here, or told on its instance), then finish the login. Nothing is
        claimed or kicked for a login whose connection already closed, and one that closes
        while its claim is out gives the user back (with the allowances its kick brought)."""
        if not self.router.claiming(c.session, c.user):
            return
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT):
                old, alive, stored = await self.bus.claim(c.user, c.session)
                handed = Allowances.decode(stored)
                give_back = old  # the session ours took the user from, while it is untouched
                instance, _, session = (old or "").partition(" ")
                if not self.router.claiming(c.session, c.user):
                    pass  # abandoned meanwhile: it closes nobody
                elif instance == self.instance and session.isdigit():
                    # An older login here whose claim Redis took before ours may still wait
                    # for its kick's answer: it must not finish after ours and close it.
                    closed = self.router.superseded(int(session), c.user)
                    give_back = None if closed else give_back
                    self._apply(closed)
                elif alive and session.isdigit():
                    give_back = None  # told to close: it may be gone by the answer
                    kicked = await self._kick(instance, c.user, int(session))
                    handed = Allowances.decode(kicked) or handed
        except (BusUnavailable, TimeoutError):
            self._apply(self.router.claim_failed(c.session))
            return
        if not self.router.claiming(c.session, c.user):  # abandoned (or replaced) meanwhile
            self._spawn(self._unclaim(c, give_back, handed))
            return
        self._apply_claimed(self.router.claimed(c.session, handed))

    async def _unclaim(self, c: Claim, old: str | None, handed: Allowances | None) -> None:
        """``c``'s session closed before its login finished: presence that names it goes back
        to ``old``, the session it took the user from, if that one was neither kicked nor
        closed (it is still connected: it must not look offline), else to nobody, keeping
        the allowances its kick brought (else an abandoned login would reset the user's
        rate limits). If a newer login took the user meanwhile, ``old`` is told to close, as
        that login would have told it had it found it."""
        instance, _, session = (old or "").partition(" ")
        if not session.isdigit():
            old = None
        elif instance == self.instance and not (
            self.router.logged_in_session(int(session))
            or self.router.claiming(int(session), c.user)  # an older login here, still out
        ):
            old = None  # ended here meanwhile: nothing to give back to
        kept = handed.encode() if handed is not None else None
        try:
            outcome = await self.bus.unclaim(c.user, c.session, old, kept)
            if outcome == 0 and old is not None:  # a newer login took the user from us
                if instance == self.instance:
                    self._apply(self.router.kick(c.user, int(session))[0])
                else:
                    await self._kick(instance, c.user, int(session))
        except BusUnavailable:  # the resync forgets the presence; keep the allowances
            if kept is not None:
                self._keep_unreleased([(c.user, c.session, kept)])

    async def _kick(self, instance: str, user: str, session: int) -> str | None:
        """Tell ``instance`` to close ``user``'s ``session``; its allowances, or None if it did
        not answer in time (it is closed anyway once that instance sees the kick)."""
        kick_id = f"{self.instance}:k{next(self._kick_ids)}"
        answer = self._kicks[kick_id] = asyncio.get_running_loop().create_future()
        try:
            kick = encode_kick(Kick(kick_id, self.instance, user, session))
            if await self.bus.publish(instance, kick) == 0:
                return None  # nobody listens there (it died just now): no answer will come
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
        if isinstance(message, Batch):
            self._take(message)
        elif isinstance(message, Kick):
            actions, handed = self.router.kick(message.user, message.session)
            self._apply(actions)
            reply = Kicked(message.id, handed.encode() if handed is not None else None)
            self._spawn(self._quietly(self.bus.publish(message.origin, encode_kick(reply))))
        else:
            _settle(self._kicks.get(message.id), message.allowances)

    def _take(self, batch: Batch) -> None:
        """Deliver a batch's envelopes (each id once) and queue their acknowledgements for the
        next flush; answer the senders whose envelopes it acknowledges."""
        out: list[Action] = []
        try:  # whatever fails, what was delivered goes out and is acknowledged
            if batch.envelopes:
                origin = batch.origin
                self.seen.heard(origin)
                delivered, refused = self._acks.setdefault(origin, ([], []))
                self._flush_soon()
                for n, to, from_user, frame in batch.envelopes:
                    if not self.seen.first(origin, n):
                        continue  # at most once: a copy of an envelope already handled
                    actions, outcome = self.router.deliver_remote(from_user, to, frame)
                    out += actions
                    if outcome is Outcome.OK:
                        delivered.append(n)
                    else:
                        refused.append((n, outcome))
            for lo, hi in batch.delivered:
                for n in self._ours(lo, hi):
                    self._answer(n, Outcome.OK, out)
            for n, outcome in batch.refused:
                self._answer(n, outcome, out)
        finally:
            if out:
                self._apply(out)

    def _ours(self, lo: int, hi: int) -> range | list[int]:
        """Our pending ids in ``lo``..``hi``, without walking a range wider than them."""
        if hi - lo < len(self._pending):
            return range(lo, hi + 1)
        return [n for n in self._pending if lo <= n <= hi]

    async def _resync(self) -> None:
        """Connected (again): release the sessions that ended while the bus was down, register
        our sessions, close those another instance took, and forget any session Redis still
        holds for us that is no longer here (its release was lost with the connection, or a
        Redis restored from disk remembers it). A user claimed here since ``sessions`` was
        taken keeps its claim (the script leaves presence of this instance alone), so a stale
        session of ours never overwrites it; a stale entry is changed only if it still names
        the ended session (session ids are never reused): to the user's open session here if
        there is one (a restored Redis may name an earlier one), else it is forgotten."""
        unreleased, self._unreleased = self._unreleased, []
        try:
            await self.bus.release(unreleased)
        except BaseException:
            self._keep_unreleased(unreleased)  # the next connection tries again
            raise
        sessions = self.router.sessions_by_user()
        lost = await self.bus.resync_users(sessions)
        await self.bus.resync_conns(self._share)
        for user in set(lost):
            for owner, session in sessions:
                if owner == user:
                    self._apply(self.router.kick(user, session)[0])
        registered = await self.bus.registered()
        open_now = dict(self.router.sessions_by_user())
        stale = [
            (user, sid, open_now.get(user))
            for user, sid in registered
            if not self.router.connected(sid)
        ]
        forgotten = await self.bus.forget(stale)
        _info(
            "resynced",
            sessions=len(sessions),
            lost=len(lost),
            released=len(unreleased),
            forgotten=forgotten,
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(operation: Awaitable[object]) -> None:
        """Best effort: a lost bus is the connection loop's business."""
        with contextlib.suppress(BusUnavailable):
            await operation


def _ack_chunks(delivered: list[int], refused: list[tuple[int, Outcome]]) -> list[str]:
    """The acknowledgement lines for one origin, in pieces that keep a message bounded."""
    step = ACKS_PER_LINES
    size = max(len(delivered), len(refused))
    return [ack_lines(delivered[i : i + step], refused[i : i + step]) for i in range(0, size, step)]


def _kept(left: Left) -> str:
    """What an ended session leaves for the user's next login, on any instance: its message
    bucket, directory and TURN levels (as on one instance, logging in again refills none)."""
    return left.allowances.encode()


def _settle(future: asyncio.Future[Any] | None, value: object) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def _info(event: str, **fields: object) -> None:
    log.info(event, extra={"fields": fields})
