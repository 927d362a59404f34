"""The Redis connection of one instance: ordered commands, its channel, heartbeat, reconnection.

Every command goes through one queue and one writer task, which sends whatever has queued up
as one pipeline: commands reach Redis in the order they were issued (so envelopes from one
sender reach the other instance in order) and a busy instance pays one round trip per batch,
not per envelope. The instance's channel is read on a second connection (pub/sub).

Losing Redis (a restart, the network) is noticed by the reader, the writer or the heartbeat.
Every command in flight or issued while down fails at once with :class:`BusUnavailable`: the
callers answer their clients with an error, nothing waits. A connection loop retries with
backoff and full jitter; once connected it loads the scripts, subscribes, registers the
instance and calls ``on_resync`` so that the caller registers its sessions again (a restarted
Redis has forgotten them). The same happens when a heartbeat finds the instance missing
(swept as dead after a long pause). Whatever ends a connection (Redis lost, or a bug in
``on_resync``) ends its tasks with it and the loop connects again: only :meth:`stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from signaling.busscripts import SCRIPTS
from signaling.errors import SignalingError

log = logging.getLogger("signaling.bus")

HEARTBEAT_INTERVAL = 1.0  # s between heartbeats
INSTANCE_TTL = 4.0  # s: an instance that missed this long of heartbeats is dead
COMMAND_TIMEOUT = 2.0  # s for a Redis round trip or a connection
RECONNECT_BASE, RECONNECT_CAP = 0.1, 2.0  # backoff ceilings, s (full jitter)
MAX_BATCH = 512  # commands in one pipeline
ALLOWANCE_TTL = 3_600  # s an ended session's allowances are kept


class BusUnavailable(SignalingError):
    """Redis cannot be reached now (the connection loop is retrying)."""


_Command = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


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
        self.url = url
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
        self._queue: asyncio.Queue[_Command] = asyncio.Queue()
        self._client: Redis | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self, wait: float = COMMAND_TIMEOUT) -> None:
        """Start the connection loop; wait up to ``wait`` s for the first connection (an
        unreachable Redis is logged and retried: the instance serves its own users meanwhile)."""
        self._runner = asyncio.create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait)
        if not self.up:
            log.warning("redis_unreachable", extra={"fields": {"url": _safe(self.url)}})

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
        flat = [v for pair in acks for v in pair]
        return self._submit(
            "EVALSHA", self._sha.get("flush", ""), 0, self.prefix, header, envelopes, *flat
        )

    async def claim(self, user: str, session: int) -> tuple[str | None, bool, bytes | None]:
        """Make ``session`` here ``user``'s one session: (the old "<inst> <sid>", whether its
        instance is alive, the allowances the user's last session ended with)."""
        old, alive, stored = await self._script("claim", self.instance, session, user)
        return (old.decode() if old else None), bool(alive), stored or None

    async def release(self, user: str, session: int, allowances: str) -> bool:
        args = (self.instance, session, user, allowances, ALLOWANCE_TTL)
        return bool(await self._script("release", *args))

    async def admit(self, net: str, limit: int) -> bool:
        return bool(await self._script("admit", self.instance, net, limit))

    async def unadmit(self, net: str) -> None:
        await self._script("unadmit", self.instance, net)

    async def resync(self, sessions: Sequence[tuple[str, int]], conns: dict[str, int]) -> list[str]:
        """Register this instance's sessions and connection counts again; the users another
        instance holds meanwhile (their session here is stale)."""
        lost: list[str] = []
        for start in range(0, len(sessions), 1_000):
            flat = [v for user, sid in sessions[start : start + 1_000] for v in (user, sid)]
            lost += [u.decode() for u in await self._script("resync_users", self.instance, *flat)]
        await self._script("resync_conns", self.instance, *[v for i in conns.items() for v in i])
        return lost

    async def publish(self, instance: str, payload: str) -> int:
        return int(await self._command("PUBLISH", f"{self.prefix}inst:{instance}", payload))

    async def _script(self, name: str, *args: Any) -> Any:
        return await self._command("EVALSHA", self._sha.get(name, ""), 0, self.prefix, *args)

    async def _command(self, *args: Any) -> Any:
        return await self._submit(*args)

    def _submit(self, *args: Any) -> asyncio.Future[Any]:
        if not self.up:
            raise BusUnavailable("the cluster bus (Redis) is not connected")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((args, future))
        return future

    # The connection loop.
    async def _run(self) -> None:
        ceiling = RECONNECT_BASE
        while True:
            client: Redis | None = None
            pubsub: PubSub | None = None
            tasks: list[asyncio.Task[None]] = []  # cancelled however this connection ends
            try:
                client = Redis.from_url(
                    self.url,
                    socket_timeout=COMMAND_TIMEOUT,
                    socket_connect_timeout=COMMAND_TIMEOUT,
                    retry=Retry(NoBackoff(), 0),
                    health_check_interval=0,
                )
                for name, text in SCRIPTS.items():
                    self._sha[name] = str(await client.script_load(text))
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                self._client, self.up = client, True
                tasks.append(asyncio.create_task(self._write(client)))
                await self._heartbeat(resync=True)
                self._connected.set()
                _info("redis_connected", instance=self.instance, reconnects=self.reconnects)
                ceiling = RECONNECT_BASE
                tasks.append(asyncio.create_task(self._read(pubsub)))
                tasks.append(asyncio.create_task(self._beat()))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # raises why it ended
            except (RedisError, OSError, TimeoutError, BusUnavailable) as exc:
                if self.up or ceiling == RECONNECT_BASE:
                    log.warning("redis_lost", extra={"fields": {"error": str(exc)[:200]}})
            except Exception as exc:  # a bug (in on_resync, say): retry, never stop for good
                fields = {"error": type(exc).__name__}
                log.error("bus_failed", extra={"fields": fields}, exc_info=exc)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.up, self._client = False, None
                self._fail_queued()
                for closing in (pubsub, client):
                    if closing is not None:
                        with contextlib.suppress(Exception):
                            await closing.aclose()
            await asyncio.sleep(random.random() * ceiling)
            ceiling = min(RECONNECT_CAP, ceiling * 2)
            self.reconnects += 1

    async def _heartbeat(self, *, resync: bool) -> None:
        added = await self._script("heartbeat", self.instance, self._ttl_ms)
        if resync or added:
            await self._on_resync()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._heartbeat(resync=False)

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            try:
                self._on_message(message["data"])
            except Exception:  # a bug handling one message must not stop the bus
                log.exception("bus message handler failed")

    async def _write(self, client: Redis) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            pipe = client.pipeline(transaction=False)
            for args, _future in batch:
                pipe.execute_command(*args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except BaseException:
                for _args, future in batch:
                    _fail(future)
                raise
            lost = None
            for (_args, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(BusUnavailable(f"redis: {str(result)[:120]}"))
                    lost = lost or result  # NOSCRIPT: Redis lost our scripts; reconnect
                else:
                    future.set_result(result)
            if lost is not None and "NOSCRIPT" in str(lost):
                raise BusUnavailable("redis forgot the scripts (restarted?)")

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            _fail(self._queue.get_nowait()[1])


def _fail(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(BusUnavailable("the cluster bus (Redis) connection was lost"))


def _safe(url: str) -> str:
    """The URL without a password, for logs."""
    head, sep, tail = url.rpartition("@")
    return f"{head.split('://', 1)[0]}://***@{tail}" if sep else url


def _info(event: str, **fields: object) -> None:
    log.info(event, extra={"fields": fields})
