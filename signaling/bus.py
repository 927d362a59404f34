"""The Redis connections of one instance: ordered commands, its channel, heartbeat, reconnection.

Commands go out on one connection in the order they are issued (so envelopes from one sender
reach the other instance in order); those of one pass of the event loop leave in one write,
so a busy instance pays one round trip per batch, not per envelope. The instance's channel is
read on a second connection, each message handed over from the protocol callback. Both speak
RESP directly (:mod:`signaling.redisconn`; :mod:`signaling.resp` says why not redis-py).

Losing Redis (a restart, the network) is noticed by either connection closing or by the
heartbeat, which also pings the subscription and gives Redis :data:`COMMAND_TIMEOUT` to
answer (a Redis that hangs is lost too). Every command in flight or issued while down fails
at once with :class:`BusUnavailable`: the callers answer their clients with an error,
nothing waits. A connection loop retries with backoff and full jitter; once connected it
loads the scripts, subscribes, registers the instance and calls ``on_resync`` so that the
caller registers its sessions again (a restarted Redis has forgotten them). The same happens
when a heartbeat finds the instance missing (swept as dead after a long pause). Whatever ends
a connection (Redis lost, or a bug in ``on_resync``) ends both connections and the heartbeat
with it and the loop connects again: only :meth:`stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from signaling.busscripts import SCRIPTS
from signaling.errors import RedisUnavailable
from signaling.redisconn import RedisConnection, closed, connect, parse_url
from signaling.resp import ProtocolError, Reply

log = logging.getLogger("signaling.bus")

HEARTBEAT_INTERVAL = 1.0  # s between heartbeats
INSTANCE_TTL = 4.0  # s: an instance that missed this long of heartbeats is dead
COMMAND_TIMEOUT = 2.0  # s for a Redis round trip or a connection
RECONNECT_BASE, RECONNECT_CAP = 0.1, 2.0  # backoff ceilings, s (full jitter)
STABLE_BEATS = 3  # heartbeats up before a loss starts the backoff from its base again
ALLOWANCE_TTL = 3_600  # s an ended session's allowances are kept
BATCH = 1_000  # sessions or addresses in one release, unadmit or resync script at most


# Redis cannot serve a command now (not connected, lost, an error reply): the connection loop
# is retrying. The name the cluster knows it by.
BusUnavailable = RedisUnavailable


class RedisBus:
    """One instance's link to Redis; ``up`` while connected and subscribed."""

    def __init__(
        self,
        url: str,
        instance: str,
        *,
        on_message: Callable[[bytes], None],
        on_resync: Callable[[], Awaitable[None]],
        prefix: str = "voice:",
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        instance_ttl: float = INSTANCE_TTL,
    ) -> None:
        # ValueError for a bad URL, before any connection; the URL itself (it may hold the
        # password) is not kept.
        self.address = parse_url(url)
        self.instance = instance
        self.prefix = prefix
        self.channel = f"{prefix}inst:{instance}"
        self.up = False
        self.reconnects = 0  # connections after the first
        self._on_message = on_message
        self._on_resync = on_resync
        self._interval = heartbeat_interval
        self._ttl_ms = int(instance_ttl * 1000)
        self._sha: dict[str, str] = {}
        self._conn: RedisConnection | None = None  # commands; set while up
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self, wait: float = COMMAND_TIMEOUT) -> None:
        """Start the connection loop; wait up to ``wait`` s for the first connection (an
        unreachable Redis is logged and retried: the instance serves its own users meanwhile)."""
        self._runner = asyncio.create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait)
        if not self.up:
            log.warning("redis_unreachable", extra={"fields": {"redis": self.address.where}})

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    # The operations (each one script, atomic in Redis).
    def flush(
        self, header: str, envelopes: str, acks: Sequence[tuple[str, str]]
    ) -> asyncio.Future[bytes]:
        """Queue one flush script (:data:`~signaling.busscripts.FLUSH`): publish each envelope
        line to the instance holding its user and each (instance, lines) of acknowledgements,
        one message per instance. At once, a future of one byte per envelope line: ``1``
        published, ``0`` nobody holds the user. BusUnavailable if the bus is down.

        A future, not a coroutine: the caller reacts in a callback, without a task per batch."""
        return self._submit(*self._call("flush", header, envelopes, *_flat(acks)))

    async def claim(self, user: str, session: int) -> tuple[str | None, bool, bytes | None]:
        """Make ``session`` here ``user``'s one session: (the old "<inst> <sid>", whether its
        instance is alive, the allowances the user's last session ended with)."""
        old, alive, stored = await self._script("claim", self.instance, session, user)
        return (old.decode() if old else None), bool(alive), stored or None

    async def release(self, departures: Sequence[tuple[str, int, str]]) -> int:
        """Forget sessions that ended, each (user, session, allowances) only if the user is
        still that session's, and keep the allowances: one script per :data:`BATCH`, each
        awaited before the next (thousands leaving at once must not hold up the heartbeat
        behind them). How many were forgotten."""
        rows = [(sid, user, kept) for user, sid, kept in departures]
        return sum(map(int, await self._in_batches("release", rows, ALLOWANCE_TTL)))

    # The per-address counts. Each command is queued when called, not from a task: one queued
    # after another reaches Redis after it, so this instance's share that resync_conns sets
    # is exactly what the counts and count-outs queued after it change.
    def admit(self, net: str, limit: int) -> asyncio.Future[Reply]:
        """Count a connection from ``net`` if every instance together holds fewer than
        ``limit``: a future of 1 (counted) or 0 (full). BusUnavailable if the bus is down."""
        return self._submit(*self._call("admit", self.instance, net, limit))

    def unadmit(self, closed: dict[str, int]) -> asyncio.Future[list[Reply]]:
        """Count closed connections out (how many closed from each address group), one
        script per :data:`BATCH` groups, all queued now."""
        rows = list(closed.items())
        return asyncio.gather(
            *(
                self._submit(*self._call("unadmit", self.instance, *_flat(rows[i : i + BATCH])))
                for i in range(0, len(rows), BATCH)
            )
        )

    async def resync_conns(self, share: Callable[[], dict[str, int]]) -> None:
        """Replace this instance's share of the per-address counts with ``share()``, called
        in the very step that queues the script (so it holds what is open as of there)."""
        await self._command(*self._call("resync_conns", self.instance, *_flat(share().items())))

    async def resync_users(self, sessions: Sequence[tuple[str, int]]) -> list[str]:
        """Register this instance's sessions again; the users another instance holds
        meanwhile (their session here is stale)."""
        replies = await self._in_batches("resync_users", sessions)
        return [u.decode() for reply in replies for u in reply]

    async def registered(self) -> list[tuple[str, int]]:
        """The (user, session) pairs Redis holds for this instance, :data:`BATCH` users a
        script (one instance may hold tens of thousands)."""
        pairs: list[tuple[str, int]] = []
        cursor = b"0"
        while True:
            reply = await self._script("registered", self.instance, cursor, BATCH)
            cursor, flat = reply[0], reply[1:]
            pairs += [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]
            if cursor == b"0":
                return pairs

    async def forget(self, stale: Sequence[tuple[str, int, int | None]]) -> int:
        """For each (user, stale session, the user's open session here or None): where
        presence still names the stale session, name the open one instead, or forget it.
        How many were forgotten."""
        rows = [(user, old, "" if new is None else new) for user, old, new in stale]
        return sum(map(int, await self._in_batches("forget", rows)))

    async def unclaim(self, user: str, session: int, old: str | None, kept: str | None) -> int:
        """Give back ``user``'s claim by ``session`` (a login that closed before it finished),
        if presence still names it: to ``old`` (if its instance lives), else to nobody,
        keeping ``kept`` allowances. 1 given back, 2 forgotten; else 0 if a newer login holds
        the user, 3 if nobody or ``old`` does."""
        args = (self.instance, session, user, old or "", ALLOWANCE_TTL, kept or "")
        return int(await self._script("unclaim", *args))

    async def publish(self, instance: str, payload: str) -> int:
        return int(await self._command("PUBLISH", f"{self.prefix}inst:{instance}", payload))

    async def _in_batches(self, name: str, rows: Sequence[Sequence[Any]], *head: Any) -> list[Any]:
        """One ``name`` script per :data:`BATCH` rows (each row's values in the script's
        argument order, after ``head``), each awaited before the next; their replies."""
        replies = []
        for start in range(0, len(rows), BATCH):
            flat = [v for row in rows[start : start + BATCH] for v in row]
            replies.append(await self._script(name, self.instance, *head, *flat))
        return replies

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._command(*self._call(name, *args))

    def _call(self, name: str, *args: Any) -> tuple[Any, ...]:
        return ("EVALSHA", self._sha.get(name, ""), 0, self.prefix, *args)

    def _conn_now(self) -> RedisConnection:
        if not self.up or self._conn is None:
            raise BusUnavailable("the cluster bus (Redis) is not connected")
        return self._conn

    async def _command(self, *args: Any) -> Any:
        """One command's reply within :data:`COMMAND_TIMEOUT`; a Redis that does not answer
        in time is lost: the connection is closed (everything waiting fails) and the loop
        connects again."""
        reply = self._submit(*args)
        conn = self._conn
        assert conn is not None  # _submit checked
        try:
            return await _timed(conn, reply)
        except TimeoutError as exc:
            conn.close(str(exc))
            raise BusUnavailable(str(exc)) from None

    def _submit(self, *args: Any) -> asyncio.Future[Any]:
        return self._conn_now().call(*args)

    # The connection loop.
    async def _run(self) -> None:
        ceiling = RECONNECT_BASE
        loop = asyncio.get_running_loop()
        while True:
            up_since: float | None = None
            conn: RedisConnection | None = None
            sub: RedisConnection | None = None
            beat: asyncio.Task[None] | None = None
            try:
                conn = await connect(self.address, COMMAND_TIMEOUT, on_error_reply=self._failed)
                sub = await connect(self.address, COMMAND_TIMEOUT, on_message=self._deliver)
                for name, text in SCRIPTS.items():
                    loading = conn.call("SCRIPT", "LOAD", text)
                    self._sha[name] = _text(await _timed(conn, loading))
                await _timed(sub, sub.call("SUBSCRIBE", self.channel))
                self._conn, self.up = conn, True
                await self._heartbeat(resync=True)
                self._connected.set()
                _info("redis_connected", instance=self.instance, reconnects=self.reconnects)
                up_since = loop.time()
                beat = asyncio.create_task(self._beat(sub))
                ending = (conn.closed, sub.closed, beat)
                await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
                if beat.done():
                    beat.result()  # raises why it ended
                ended = conn if conn.closed.done() else sub
                raise BusUnavailable(f"connection lost: {ended.why}")
            except (RedisUnavailable, ProtocolError, OSError, TimeoutError) as exc:
                if self.up or ceiling == RECONNECT_BASE:
                    log.warning("redis_lost", extra={"fields": {"error": str(exc)[:200]}})
            except Exception as exc:  # a bug (in on_resync, say): retry, never stop for good
                fields = {"error": type(exc).__name__}
                log.error("bus_failed", extra={"fields": fields}, exc_info=exc)
            finally:
                # Closed before anything is awaited: stop() may cancel us at any await here.
                self.up, self._conn = False, None
                for connection in (conn, sub):
                    if connection is not None:
                        connection.close()  # fails the commands in flight
                if beat is not None:
                    beat.cancel()
                    await asyncio.gather(beat, return_exceptions=True)
                await closed(conn)
                await closed(sub)
            if up_since is not None and loop.time() - up_since >= STABLE_BEATS * self._interval:
                ceiling = RECONNECT_BASE  # it held: a new outage starts the backoff again
            # (one lost again at once, say its subscription dropped by Redis's output limit,
            # backs off, rather than connecting and registering everything again 10 times a
            # second for ever)
            await asyncio.sleep(random.random() * ceiling)
            ceiling = min(RECONNECT_CAP, ceiling * 2)
            self.reconnects += 1

    async def _heartbeat(self, *, resync: bool) -> None:
        """Renew the instance; register the sessions again if asked to or if Redis had lost
        us. Each command has its deadline (:meth:`_command`): a Redis that stops answering
        midway ends the connection, never leaves it up and silent."""
        added = await self._script("heartbeat", self.instance, self._ttl_ms)
        if resync or added:
            await self._on_resync()

    async def _beat(self, sub: RedisConnection) -> None:
        """Renew the instance every interval, counted from when the last beat began (a slow
        Redis must not stretch the gaps towards the instance's time to live), and ping the
        subscription meanwhile (a connection that stopped answering would otherwise go
        unnoticed while no message comes)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + self._interval, loop.time())  # late: at once, then on the grid
            await asyncio.sleep(due - loop.time())
            ping = _timed(sub, sub.call("PING"), "the subscription did not answer a ping")
            await asyncio.gather(self._heartbeat(resync=False), ping)

    def _deliver(self, data: bytes) -> None:
        try:
            self._on_message(data)
        except Exception:  # a bug handling one message must not stop the bus
            log.exception("bus message handler failed")

    def _failed(self, error: str) -> None:
        """An error reply. NOSCRIPT: Redis lost our scripts (SCRIPT FLUSH); connecting again
        loads them."""
        if error.startswith("NOSCRIPT") and self._conn is not None:
            self._conn.close("redis forgot the scripts")


async def _timed(
    conn: RedisConnection, reply: asyncio.Future[Reply], what: str = "redis did not answer"
) -> Reply:
    """``reply`` within :data:`COMMAND_TIMEOUT` of its command leaving ``conn``."""
    try:
        await asyncio.shield(conn.sent())
        return await asyncio.wait_for(reply, COMMAND_TIMEOUT)
    except TimeoutError:
        raise TimeoutError(f"{what} within {COMMAND_TIMEOUT:g} s") from None


def _flat(pairs: Iterable[tuple[Any, Any]]) -> list[Any]:
    return [v for pair in pairs for v in pair]


def _text(reply: Reply) -> str:
    if not isinstance(reply, bytes):
        raise ProtocolError("expected a string reply")
    return reply.decode()


def _info(event: str, **fields: object) -> None:
    log.info(event, extra={"fields": fields})
