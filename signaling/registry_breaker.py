"""The writing connection of the PostgreSQL registry, behind a circuit breaker.

The registry writes on the event loop (the Router asks it synchronously), so opening a
connection there would freeze every session of the instance for as long as libpq waits, and
libpq will not give up on an unanswered host in under 2 s. So:

* A connection is opened in a thread; the loop waits for it at most ``wait`` seconds. An
  attempt that outlasts the wait goes on in its thread, and its connection serves the first
  write after it got through.
* A failed or cut-short attempt opens the breaker: writes fail at once with
  :class:`~signaling.registry.RegistryUnavailable`, without touching the network, for
  ``retry`` seconds, doubling up to :data:`MAX_WRITE_RETRY` while the database stays away.
  The breaker closes when a connection opens, or when the owner learns that the database
  answers again (:meth:`WriterBreaker.reset`).

So an unreachable database stalls the loop at most once per backoff period, for at most
``wait`` seconds (the one write already under way on a connection whose host vanished still
waits out the connection's TCP timeout first). Messages name the database with ``where``
(never with its password).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from signaling.registry import RegistryUnavailable

log = logging.getLogger("signaling.registry")

Conn = psycopg.Connection[tuple[Any, ...]]

MAX_WRITE_RETRY = 8.0  # s: the longest the breaker stays open (registrations wait no longer)
CONNECT_WAIT = 0.3  # s the event loop waits for a new connection


class _Attempt:
    """A connection being opened in a thread; ``done`` once it succeeded or failed."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.conn: Conn | None = None  # set before done, under the breaker's lock
        self.error = ""


class WriterBreaker:
    """One writing connection, opened (again) on demand by ``connect`` in a thread."""

    def __init__(
        self,
        connect: Callable[[], Conn],
        where: str,
        *,
        retry: float,
        wait: float = CONNECT_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open, self.where = connect, where
        self._retry, self._wait, self._clock = retry, wait, clock
        self._conn: Conn | None = None
        self._open_after = 0.0  # writes fail at once before this (clock): the breaker is open
        self._backoff = retry  # how long it opens next time
        self._attempt: _Attempt | None = None
        self._lock = threading.Lock()  # guards _closed against the attempts' threads
        self._closed = False

    def connection(self) -> Conn:
        """The connection, opened again if it broke; RegistryUnavailable if there is none
        (at once while the breaker is open)."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        attempt = self._attempt
        if attempt is not None and attempt.done.is_set() and attempt.conn is not None:
            return self._adopt(attempt)  # a slow attempt that got through meanwhile
        if self._clock() < self._open_after:
            raise RegistryUnavailable(f"the registry {self.where} is unreachable; try later")
        if attempt is None or attempt.done.is_set():
            attempt = self._attempt = self._start()
        if not attempt.done.wait(self._wait):  # it goes on in its thread
            self._trip(f"no connection within {self._wait} s")
            raise RegistryUnavailable(f"the registry {self.where} does not answer; try later")
        if attempt.conn is None:
            self._attempt = None
            self._trip(attempt.error)
            raise RegistryUnavailable(f"the registry {self.where}: {attempt.error}")
        return self._adopt(attempt)

    def use(self, conn: Conn) -> None:
        """Write on ``conn`` (one the owner opened itself, at start)."""
        self._conn = conn

    def lost(self) -> None:
        """The connection failed a write: close it (the next write opens another)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def reset(self) -> None:
        """The database answers again: close the breaker."""
        self._open_after, self._backoff = 0.0, self._retry

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened = self._attempt.conn if self._attempt is not None else None
        for conn in (self._conn, opened):
            if conn is not None:
                conn.close()
        self._conn = None

    def _start(self) -> _Attempt:
        attempt = _Attempt()
        thread = threading.Thread(
            target=self._connect, args=(attempt,), name="registry-connect", daemon=True
        )
        thread.start()
        return attempt

    def _connect(self, attempt: _Attempt) -> None:
        """Off the event loop: one attempt to open the connection."""
        try:
            conn = self._open()
        except Exception as exc:  # psycopg's errors, and whatever else stops it
            attempt.error = str(exc) or type(exc).__name__
        else:
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    attempt.conn = conn
        finally:
            attempt.done.set()

    def _adopt(self, attempt: _Attempt) -> Conn:
        assert attempt.conn is not None
        self._attempt, self._conn = None, attempt.conn
        self.reset()
        return attempt.conn

    def _trip(self, error: str) -> None:
        """Open the breaker for the backoff, which doubles next time."""
        self._open_after = self._clock() + self._backoff
        fields = {"db": self.where, "error": error[:200], "retry_s": self._backoff}
        log.warning("registry_unreachable", extra={"fields": fields})
        self._backoff = min(MAX_WRITE_RETRY, self._backoff * 2)
