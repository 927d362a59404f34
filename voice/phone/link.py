"""The phone's link to the signaling server: one session at a time, logged in again when lost.

    link = await SignalingLink.open(config)      # the first login: its errors raise at once
    ... link.client ...                          # the current session (read its deliveries)
    if link.retries(error):                      # that session ended: a transient loss?
        link.went_offline(error)
        await link.reconnect()                   # backoff with full jitter until logged in
    await link.send("bob", body)                 # waits for the link (request_timeout)
    link.renew("the network changed")            # this machine moved: log in again now

Each new login uses the same identity and the same checks as the first one (TLS verification,
``ws://`` only to loopback) and is pinned to the server name and id the first login signed, so
a reconnection never signs another deployment's challenge. Fatal errors never retry: a refused
login (bad signature, username taken, registration refused), another server name or id, a
certificate that does not verify, or a session replaced by a login elsewhere (retrying would
take the name back from the user's other device, forever).

A change of this machine's addresses (:meth:`SignalingLink.renew`, from the phone's address
watch) cuts the session and logs in again at once, with no backoff wait: the session's socket
may be bound to an address that is gone, and keepalive would take up to ~14 s to notice, while
a call's ICE restart needs the server now. A login still in flight then is abandoned (it may
have gone out on the old network) and a backoff wait ends; the backoff starts over, since a
move says nothing about the server.

Several addresses (``PhoneConfig.fallback_urls``: instances of one deployment without a load
balancer in front): the first login tries them in the order given; after a lost session each
attempt tries every address once, the others first (in a random rotation, so that the users
of a dead instance spread over the rest) and the lost one last. Whichever answers, it must
present the server name and id that the first login signed (and its own TLS certificate and
host name, as always): several addresses never widen what the phone will log in to.

:class:`Backoff` is pure: exponential with full jitter (a random wait below a ceiling that
doubles per failed attempt, up to a cap), reset after a successful login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from voice.errors import (
    InsecureServerUrl,
    LoginRefused,
    RecipientOffline,
    ServerCertificateRejected,
    ServerNameChanged,
    SessionReplaced,
    SignalingClientError,
    SignalingClosed,
)
from voice.net.client import SignalingClient
from voice.phone.config import PhoneConfig

__all__ = ["Backoff", "LinkChange", "SignalingLink", "is_fatal"]

log = logging.getLogger("voice.phone")
PROBE_TIMEOUT = 3.0  # s: a session whose server answers no ping in this is renewed
MAX_CHANGES = 64  # link changes kept (and queued) for the user, newest last
STABLE_AFTER = 10.0  # a session that lasted this long resets the backoff: a server that logs
# us in and drops us at once gets ever longer waits, not a storm of logins
OFFLINE_RETRY = 0.25  # seconds between sends to a peer that is reconnecting (patient sends)
# Login refusals that say "not now" rather than "never": retried with backoff.
TRANSIENT_LOGIN_CODES = frozenset(
    {"login_timeout", "too_many_connections", "rate_limited", "registration_limited", "internal"}
)
_CLOSE_REASONS = {
    1001: "the server is shutting down",
    1006: "the connection was lost",
    1011: "the server stopped answering keepalive pings",
}


class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` (from 0) waits a uniformly random
    time in ``[0, min(cap, base * 2**n))``; :meth:`reset` after a success starts over."""

    def __init__(
        self, base: float = 0.5, cap: float = 15.0, rand: Callable[[], float] = random.random
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rand = rand
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, self.base * (1 << min(self.attempt, 62)))

    def next_delay(self) -> float:
        delay = self._rand() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class LinkChange:
    """The phone went offline (and reconnects) or came back online; ``at`` is wall time."""

    state: Literal["offline", "online"]
    reason: str
    at: float

    @property
    def online(self) -> bool:
        return self.state == "online"


def is_fatal(exc: BaseException) -> bool:
    """Whether a lost session or a failed login must end the phone instead of retrying."""
    if isinstance(exc, LoginRefused):
        return exc.code not in TRANSIENT_LOGIN_CODES
    fatal = (SessionReplaced, ServerNameChanged, ServerCertificateRejected, InsecureServerUrl)
    return isinstance(exc, fatal) or not isinstance(exc, SignalingClientError)


def describe(exc: BaseException) -> str:
    """A short reason for the user: why the link went down."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code in _CLOSE_REASONS:
        return _CLOSE_REASONS[code]
    text = str(exc) or type(exc).__name__
    return f"{text} ({code})" if code is not None and str(code) not in text else text


class SignalingLink:
    """The current signaling session of a phone and the logic to get a new one."""

    def __init__(self, config: PhoneConfig, client: SignalingClient) -> None:
        self.config = config
        self.client = client
        self.server = client.server  # pinned: every reconnection must see the same name and id
        self.server_id = client.server_id
        self.fatal: SignalingClientError | None = None
        self.reconnects = 0  # successful logins after the first
        self.changes: list[LinkChange] = []
        self.backoff = Backoff(config.reconnect_delay, config.reconnect_max_delay)
        self._up = asyncio.Event()
        self._up.set()
        self._up_since = asyncio.get_running_loop().time()
        self._ended = asyncio.Event()  # fatal, or closed
        self._moved = asyncio.Event()  # the network changed: log in again now, no backoff wait
        self._renewal: str | None = None  # why renew() cut the session (for went_offline)
        self._queue: asyncio.Queue[LinkChange] = asyncio.Queue(MAX_CHANGES)
        self.url = config.server_url  # the address of the current session

    @classmethod
    async def open(cls, config: PhoneConfig) -> SignalingLink:
        """The first login, with the config's pins (SignalingUnreachable, LoginRefused, ...),
        at the first of the addresses that answers."""
        urls = (config.server_url, *config.fallback_urls)
        client, url = await login_any(
            config, urls, config.expected_server, config.expected_server_id
        )
        link = cls(config, client)
        link.url = url
        return link

    @property
    def online(self) -> bool:
        return self._up.is_set() and self.fatal is None

    def retries(self, exc: BaseException) -> bool:
        """Whether to reconnect after the session ended with ``exc``."""
        return self.config.reconnect and not is_fatal(exc) and not self._ended.is_set()

    def went_offline(self, exc: BaseException) -> None:
        self._up.clear()
        if asyncio.get_running_loop().time() - self._up_since >= STABLE_AFTER:
            self.backoff.reset()  # a session that lasted: start over with short waits
        reason, self._renewal = self._renewal or describe(exc), None
        log.warning("signaling session lost (%s): reconnecting", reason)
        self._note(LinkChange("offline", reason, self.config.hooks.clock()))

    def end(self, exc: SignalingClientError | None) -> None:
        """No more sessions: ``exc`` is the fatal error (None: the phone was closed)."""
        self.fatal = self.fatal or exc
        self._up.clear()
        self._ended.set()

    async def renew_if_stranded(self, addresses: Collection[str], reason: str) -> None:
        """This machine's addresses changed: log in again now if the session is stranded.

        Its socket's address is gone: it is (renew at once). Still there (an address was only
        added: a VPN came up, an IPv6 privacy address rotated): the session may still work, and
        cutting it would fail calls being set up, so it is renewed only if the server does not
        answer a ping within ``PROBE_TIMEOUT`` (the route under it may have moved)."""
        if not self._up.is_set():
            return
        client = self.client
        local = client.local_address()
        stranded = local is None or local not in addresses
        stranded = stranded or not await client.probe(PROBE_TIMEOUT)
        if stranded and client is self.client:  # (not already replaced meanwhile)
            self.renew(reason)

    def renew(self, reason: str) -> None:
        """Log in again now, on the network as it is now (this machine's addresses changed).

        The current session is cut without a closing handshake (the read loop sees it end and
        reconnects), a backoff wait ends, a login in flight is abandoned, and the backoff starts
        over. Nothing happens without ``reconnect`` (the cut would end the phone: the session
        may still work) or once the link ended.
        """
        if not self.config.reconnect or self._ended.is_set():
            return
        self.backoff.reset()
        self._moved.set()
        if self._up.is_set():
            log.info("%s: logging in again", reason)
            self._renewal = reason
            self._up.clear()
            self.client.abort()

    async def reconnect(self) -> None:
        """Log in again, with backoff, until it works; raise the first fatal error. After a
        :meth:`renew` the next attempt starts at once."""
        while True:
            if not self._moved.is_set():
                with contextlib.suppress(TimeoutError):  # the wait, unless the network changes
                    await asyncio.wait_for(self._moved.wait(), self.backoff.next_delay())
            self._moved.clear()
            try:
                client = await self._login_unless_moved()
            except SignalingClientError as exc:
                if is_fatal(exc):
                    raise
                log.info("reconnecting failed (%s); retrying", describe(exc))
                continue
            if client is None:
                log.info("the network changed during a login; logging in again")
                continue
            if self._ended.is_set():  # closed meanwhile
                await client.close()
                return
            self.client = client
            self.reconnects += 1
            self._up_since = asyncio.get_running_loop().time()
            self._up.set()
            log.info("signaling session back")
            self._note(LinkChange("online", "logged in again", self.config.hooks.clock()))
            return

    async def wait_online(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once the link is up; raise the fatal error if it never will; TimeoutError."""
        async with asyncio.timeout(timeout):
            await _first_set(self._up, self._ended)
        if self._ended.is_set():
            raise self.fatal or SignalingClosed("the phone is closed", code=None)

    async def next_change(self, timeout: float | None = None) -> LinkChange:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    async def send(self, to: str, body: bytes, *, patient: bool = False) -> None:
        """Send once the link is up, within ``request_timeout`` in all. A send cut off by a
        lost session is tried again on the next one (the peer's replay guard drops a copy).
        ``patient``: the peer is known to be online lately (we are in a call with it), so
        ``offline`` means it is reconnecting too: try again until the time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout
        while True:
            client = await self._current(deadline - loop.time())
            try:
                await client.send(to, body, reply_timeout=max(0.0, deadline - loop.time()))
                return
            except RecipientOffline:
                if not patient or loop.time() + OFFLINE_RETRY >= deadline:
                    raise
                await asyncio.sleep(OFFLINE_RETRY)
                continue
            except SignalingClosed:
                if self._ended.is_set() or loop.time() >= deadline:
                    raise
            try:  # the phone is noticing the loss: wait for the next session
                await asyncio.wait_for(self._replaced(client), deadline - loop.time())
            except TimeoutError:
                raise _offline() from None

    async def lookup(self, user: str) -> bytes:
        client = await self._current(self.config.request_timeout)
        return await client.lookup(user, reply_timeout=self.config.request_timeout)

    async def close(self) -> None:
        self.end(None)
        await self.client.close()

    async def _current(self, limit: float) -> SignalingClient:
        """The session to use, waiting up to ``limit`` seconds while reconnecting."""
        if not self._up.is_set() and not self._ended.is_set():
            try:
                await self.wait_online(max(0.0, limit))
            except TimeoutError:
                raise _offline() from None
        if self._ended.is_set():
            raise self.fatal or SignalingClosed("the phone is closed", code=None)
        return self.client

    async def _login_unless_moved(self) -> SignalingClient | None:
        """One login; None if the network changed before it was done: it may have gone out on
        the old network, where it would only run into its timeout."""
        attempt = asyncio.ensure_future(
            login_any(self.config, self._order(), self.server, self.server_id)
        )
        moved = asyncio.ensure_future(self._moved.wait())
        try:
            await asyncio.wait((attempt, moved), return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
            if not attempt.done():
                attempt.cancel()
                await asyncio.wait((attempt,))  # a cancelled login closes its socket first
        if not self._moved.is_set():
            client, self.url = attempt.result()  # the session, or why the login failed
            return client
        if not attempt.cancelled() and attempt.exception() is None:
            attempt.result()[0].abort()  # done just as the network changed: not to be trusted
        return None

    def _order(self) -> list[str]:
        """Where to log in again: the other addresses (random rotation), the lost one last."""
        others = [u for u in (self.config.server_url, *self.config.fallback_urls) if u != self.url]
        start = random.randrange(len(others)) if others else 0
        return [*others[start:], *others[:start], self.url]

    async def _replaced(self, client: SignalingClient) -> None:
        """Until the link has another session than ``client`` (or ended)."""
        while self.client is client and not self._ended.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def _note(self, change: LinkChange) -> None:
        self.changes.append(change)
        del self.changes[:-MAX_CHANGES]
        if self._queue.full():
            self._queue.get_nowait()  # nobody is reading: keep the newest
        self._queue.put_nowait(change)


def _offline() -> SignalingClosed:
    return SignalingClosed("not connected to the signaling server (reconnecting)", code="offline")


async def _first_set(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def login_any(
    config: PhoneConfig,
    urls: Sequence[str],
    expected_server: str | None,
    expected_server_id: str | None,
) -> tuple[SignalingClient, str]:
    """Log in at the first of ``urls`` that lets us, each with the same pins; a fatal error
    (another server id, a certificate that does not verify, a refused login) stops at once,
    a transient one moves on to the next; all failed: the last error."""
    error: SignalingClientError | None = None
    for url in urls:
        try:
            return await login(config, expected_server, expected_server_id, url), url
        except SignalingClientError as exc:
            if is_fatal(exc):
                raise
            error = exc
    assert error is not None, "no address to log in to"
    raise error


async def login(
    config: PhoneConfig,
    expected_server: str | None,
    expected_server_id: str | None,
    url: str | None = None,
) -> SignalingClient:
    """One login with the phone's identity, TLS settings and keepalive (at ``url``, by
    default the configured address)."""
    return await SignalingClient.connect(
        url or config.server_url,
        config.user,
        config.identity.public_key,
        config.identity.sign,
        expected_server=expected_server,
        expected_server_id=expected_server_id,
        ca_file=config.ca_file,
        insecure=config.insecure,
        open_timeout=config.request_timeout,
        ping_interval=config.keepalive_interval,
        ping_timeout=config.keepalive_timeout,
    )
