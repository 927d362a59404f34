"""The server's pure core: sessions, login, presence, routing and limits. No I/O, no awaits.

The adapter (:mod:`signaling.server`) feeds it events (connect, a frame, a frame written,
disconnect, a deadline) and carries out the actions it returns: :class:`Transmit` a frame or
:class:`Disconnect` with a close code. Time comes from the injected ``clock`` (monotonic) and
``wall_clock`` (TURN expiry), randomness from ``random_bytes``, so tests drive it step by step.

Session states: ``waiting`` (challenge sent) -> ``open`` (logged in) -> ``closing`` (an error
and a Disconnect were emitted; every later input is ignored) -> removed on disconnect.
Bodies are never decoded past the base64 check, and never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from signaling.auth import RandomBytes, new_nonce, verify_login
from signaling.config import Config
from signaling.errors import FrameError
from signaling.messages import (
    Challenge,
    Error,
    Key,
    Login,
    Lookup,
    Send,
    Sent,
    TurnCredentials,
    Welcome,
)
from signaling.presence import LocalPresence, Presence, SessionId
from signaling.protocol import CloseCode, ErrorCode, deliver_frame, encode, parse_client_frame
from signaling.ratelimit import TokenBucket
from signaling.registry import Registry
from signaling.turn import turn_credentials

log = logging.getLogger("signaling.router")


@dataclass(frozen=True, slots=True)
class Transmit:
    session: SessionId
    frame: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    session: SessionId
    code: int
    reason: str


Action = Transmit | Disconnect


@dataclass(slots=True)
class _Session:
    id: SessionId
    ip: str
    nonce: bytes
    deadline: float
    bucket: TokenBucket
    state: str = "waiting"
    user: str | None = None
    pending: int = 0
    accepted: bool = True
    net: str = ""  # what the per-IP limit counts: the IPv4 address or the IPv6 /64


@dataclass(slots=True)
class RouterStats:
    """Plain counters the metrics collector reads at scrape time."""

    envelopes_routed: int = 0
    frames_received: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    logins: Counter[str] = field(default_factory=Counter)


class Router:
    def __init__(
        self,
        config: Config,
        registry: Registry,
        *,
        presence: Presence | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        self.config = config
        self.registry = registry
        self.presence: Presence = presence if presence is not None else LocalPresence()
        self.stats = RouterStats()
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random_bytes
        self._sessions: dict[SessionId, _Session] = {}
        self._per_ip: Counter[str] = Counter()
        self._accepted = 0
        self._next_id = 1

    @property
    def connections(self) -> int:
        return self._accepted

    @property
    def logged_in(self) -> int:
        return len(self.presence)

    def connect(self, ip: str) -> tuple[SessionId, list[Action]]:
        """A socket opened: send the challenge, or refuse it if a connection limit is reached."""
        sid, now = self._next_id, self._clock()
        self._next_id += 1
        bucket = TokenBucket(self.config.rate, self.config.burst, now)
        s = _Session(sid, ip, new_nonce(self._random), now + self.config.login_timeout, bucket)
        s.net = address_group(ip)
        self._sessions[sid] = s
        out: list[Action] = []
        full = self._accepted >= self.config.max_connections
        if full or self._per_ip[s.net] >= self.config.max_connections_per_ip:
            s.accepted = False
            what = "server" if full else "address"
            self._close(
                s,
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"too many connections from this {what}",
                CloseCode.TOO_MANY_CONNECTIONS,
                out,
            )
            return sid, out
        self._accepted += 1
        self._per_ip[s.net] += 1
        self._emit(s, encode(Challenge(self.config.name, s.nonce)), out)
        return sid, out

    def receive(self, sid: SessionId, data: str | bytes) -> list[Action]:
        """One frame arrived from ``sid``; every frame gets exactly one answer."""
        s = self._sessions.get(sid)
        if s is None or s.state == "closing":
            return []
        self.stats.frames_received += 1
        out: list[Action] = []
        allowed = s.bucket.take(self._clock())  # every frame spends a token, malformed or not
        try:
            msg = parse_client_frame(
                data,
                max_frame_bytes=self.config.max_frame_bytes,
                max_body_bytes=self.config.max_body_bytes,
            )
        except FrameError as exc:
            if exc.kind == "login" and s.user is None:
                self._login_failed(s, exc.code, exc.message, out)
            else:
                self._error(s, exc.code, exc.message, exc.id, out)
            return out
        msg_id = None if isinstance(msg, Login) else msg.id
        if not allowed:
            self._error(s, ErrorCode.RATE_LIMITED, "too many messages; slow down", msg_id, out)
        elif isinstance(msg, Login):
            self._login(s, msg, out)
        elif s.user is None:
            self._error(s, ErrorCode.NOT_LOGGED_IN, "log in first", msg_id, out)
        elif isinstance(msg, Send):
            self._route(s, s.user, msg, out)
        elif isinstance(msg, Lookup):
            self._lookup(s, msg, out)
        else:
            self._turn(s, s.user, msg.id, out)
        return out

    def written(self, sid: SessionId) -> None:
        """The adapter handed one queued frame of ``sid`` to the socket."""
        s = self._sessions.get(sid)
        if s is not None and s.pending > 0:
            s.pending -= 1

    def check_deadline(self, sid: SessionId) -> tuple[list[Action], float | None]:
        """Close ``sid`` if it is past its login deadline; else say how long to wait again."""
        s = self._sessions.get(sid)
        if s is None or s.state != "waiting":
            return [], None
        left = s.deadline - self._clock()
        if left > 0:
            return [], left
        out: list[Action] = []
        self._close(
            s, ErrorCode.LOGIN_TIMEOUT, "no login before the deadline", CloseCode.LOGIN_TIMEOUT, out
        )
        return out, None

    def fail(self, sid: SessionId) -> list[Action]:
        """The adapter hit a bug handling ``sid``: close that connection only."""
        s = self._sessions.get(sid)
        out: list[Action] = []
        if s is not None and s.state != "closing":
            self._close(s, ErrorCode.INTERNAL, "internal error", CloseCode.INTERNAL, out)
        return out

    def disconnect(self, sid: SessionId) -> None:
        """The socket is gone: forget the session."""
        s = self._sessions.pop(sid, None)
        if s is None:
            return
        if s.accepted:
            self._accepted -= 1
            self._per_ip[s.net] -= 1
            if self._per_ip[s.net] <= 0:
                del self._per_ip[s.net]
        if s.user is not None:
            self.presence.detach(s.user, sid)

    def _login(self, s: _Session, msg: Login, out: list[Action]) -> None:
        if s.user is not None:
            self._error(s, ErrorCode.ALREADY_LOGGED_IN, "this connection is logged in", None, out)
            return
        nonce, s.nonce = s.nonce, b""  # single use, whatever happens next
        if not verify_login(self.config.name, msg, nonce):
            self._login_failed(s, ErrorCode.BAD_SIGNATURE, "signature does not verify", out)
            return
        if not self.registry.claim(msg.user, msg.key):
            self._login_failed(s, ErrorCode.USERNAME_TAKEN, "username owned by another key", out)
            return
        old_sid = self.presence.attach(msg.user, s.id)
        s.user, s.state = msg.user, "open"
        self.stats.logins["ok"] += 1
        old = self._sessions.get(old_sid) if old_sid is not None else None
        if old is not None:
            s.bucket = old.bucket  # logging in again does not reset the rate limit
            self._close(
                old,
                ErrorCode.REPLACED,
                "logged in from another connection",
                CloseCode.REPLACED,
                out,
            )
        self._emit(s, encode(Welcome(msg.user)), out)
        _info("login", session=s.id, user=msg.user, ip=s.ip, replaced=old_sid)

    def _login_failed(self, s: _Session, code: str, message: str, out: list[Action]) -> None:
        self.stats.logins["refused"] += 1
        _info("login_refused", session=s.id, ip=s.ip, code=code)
        self._close(s, code, message, CloseCode.LOGIN_FAILED, out)

    def _route(self, s: _Session, user: str, msg: Send, out: list[Action]) -> None:
        target_id = self.presence.lookup(msg.to)
        target = self._sessions.get(target_id) if target_id is not None else None
        if target is None or target.state != "open":
            if self.registry.exists(msg.to):
                self._error(s, ErrorCode.OFFLINE, "recipient is not connected", msg.id, out)
            else:
                self._error(s, ErrorCode.UNKNOWN_USER, "no such user", msg.id, out)
            return
        if target.pending >= self.config.max_queue:
            # Drop the envelope and tell the sender; never close the recipient for what others
            # sent it, or any user could end anyone's session. A dead reader is dropped by the
            # keepalive; one that does not read its own answers overflows in _emit.
            self._error(
                s, ErrorCode.QUEUE_FULL, "recipient is not keeping up; dropped", msg.id, out
            )
            return
        self._emit(target, deliver_frame(user, msg.body), out)
        self.stats.envelopes_routed += 1
        self._emit(s, encode(Sent(msg.id)), out)

    def _lookup(self, s: _Session, msg: Lookup, out: list[Action]) -> None:
        """Key directory: the key that owns a username (clients pin it on first use)."""
        key = self.registry.key_of(msg.user)
        if key is None:
            self._error(s, ErrorCode.UNKNOWN_USER, "no such user", msg.id, out)
            return
        self._emit(s, encode(Key(msg.id, msg.user, key)), out)

    def _turn(self, s: _Session, user: str, msg_id: str, out: list[Action]) -> None:
        turn = self.config.turn
        if turn is None:
            self._error(s, ErrorCode.TURN_UNAVAILABLE, "no TURN relay configured", msg_id, out)
            return
        username, password = turn_credentials(turn.secret, user, turn.ttl, self._wall_clock())
        creds = TurnCredentials(msg_id, username, password, turn.ttl, turn.uris)
        self._emit(s, encode(creds), out)

    def _error(
        self, s: _Session, code: str, message: str, msg_id: str | None, out: list[Action]
    ) -> None:
        self.stats.errors[str(code)] += 1
        self._emit(s, encode(Error(str(code), message, msg_id)), out)

    def _emit(self, s: _Session, frame: str, out: list[Action]) -> bool:
        """Queue a frame for ``s``; a full queue closes ``s`` (queue_full) and returns False."""
        if s.state == "closing":
            return False
        if s.pending >= self.config.max_queue:
            self._close(
                s,
                ErrorCode.QUEUE_FULL,
                "outbound queue full; read faster",
                CloseCode.QUEUE_FULL,
                out,
            )
            return False
        s.pending += 1
        out.append(Transmit(s.id, frame))
        return True

    def _close(self, s: _Session, code: str, message: str, close: int, out: list[Action]) -> None:
        """Error frame (allowed past the queue bound), then Disconnect; ignore ``s`` from now."""
        self.stats.errors[str(code)] += 1
        s.pending += 1
        out.append(Transmit(s.id, encode(Error(str(code), message))))
        out.append(Disconnect(s.id, int(close), str(code)))
        s.state = "closing"
        if s.user is not None:
            self.presence.detach(s.user, s.id)
        _info("close", session=s.id, code=str(code))


def address_group(ip: str) -> str:
    """The unit the per-IP limit counts: an IPv4 address (IPv4-mapped IPv6 included) or an
    IPv6 /64, since one host routinely owns a whole /64; anything unparsable as itself."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _info(event: str, **fields: object) -> None:
    log.info(event, extra={"fields": fields})
