"""The server's pure core: sessions, login, presence, routing and limits. No I/O, no awaits.

The adapter (:mod:`signaling.server`) feeds it events (connect, a frame, a frame written,
disconnect, a deadline) and carries out the actions it returns: :class:`Transmit` a frame or
:class:`Disconnect` with a close code. Time comes from the injected ``clock`` (monotonic) and
``wall_clock`` (TURN expiry), randomness from ``random_bytes``, so tests drive it step by step.

Session states: ``waiting`` (challenge sent) -> ``open`` (logged in) -> ``closing`` (an error
and a Disconnect were emitted; every later input is ignored) -> removed on disconnect.
Bodies are never decoded past the base64 check, and never logged.

Per-user allowances besides the message rate, each kept across reconnections: the directory
(a ``lookup``, or a ``send`` to a name this session has not exchanged an envelope with, spends a
token, whatever the answer, so probing who exists or who is online is slow) and TURN
credentials. New usernames go through :class:`signaling.registration.Registrations`.

Cluster mode (``cluster=True``, several instances behind a load balancer, :mod:`signaling.cluster`
does the I/O): a login becomes a :class:`~signaling.handoff.Claim` (state ``claiming``) and is
finished by :meth:`Router.claimed`; an envelope for a user who is not on this
instance becomes a :class:`~signaling.handoff.Forward`, answered by :meth:`Router.forwarded`;
envelopes from other instances come in through :meth:`Router.deliver_remote`. Still pure.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from signaling.auth import RandomBytes, ServerIdentity, new_nonce, new_server_id
from signaling.config import Config
from signaling.errors import FrameError
from signaling.handoff import Allowances, Claim, Forward, Left, Outcome
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
from signaling.ratelimit import KeyedBuckets, TokenBucket
from signaling.registration import Registrations
from signaling.registry import Registry, RegistryUnavailable
from signaling.turn import turn_credentials

log = logging.getLogger("signaling.router")

MAX_PEERS = 64  # names per session that can be answered without spending a directory token
MAX_TRACKED_USERS = 65_536  # per-user allowances kept (least recently used forgotten first)
# Frames of a session's own answers (sent, errors, keys) queued past max_queue, which bounds
# what others deliver to it: their envelopes can never make its answers overflow.
ANSWER_ROOM = 16


@dataclass(frozen=True, slots=True)
class Transmit:
    session: SessionId
    frame: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    session: SessionId
    code: int
    reason: str


Action = Transmit | Disconnect | Forward | Claim


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
    invite: str | None = None  # the invitation token the client dialed with, if any
    claiming: str | None = None  # cluster mode: the user this login is being claimed for
    # The user's levels when the server closed this session: what it leaves, not the ones of
    # when its socket finally goes (a newer session may have spent meanwhile).
    closed_with: Allowances | None = None
    # Names this session was delivered an envelope from: sending to them spends no directory
    # token (answering is free; probing is not). Bounded; the oldest is forgotten first.
    peers: OrderedDict[str, None] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class RouterStats:
    """Plain counters the metrics collector reads at scrape time."""

    envelopes_routed: int = 0
    frames_received: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    logins: Counter[str] = field(default_factory=Counter)
    registrations: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)  # cluster mode, by Outcome


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
        identity: ServerIdentity | None = None,
        cluster: bool = False,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.registry = registry
        self.presence: Presence = presence if presence is not None else LocalPresence()
        self.stats = RouterStats()
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random_bytes
        # What logins are bound to (signaling.auth); the adapter passes the TLS one. Default:
        # a plain server answering to loopback names, with the configured or a fresh id.
        self.identity = identity or ServerIdentity(
            config.name, config.server_id or new_server_id(random_bytes)
        )
        self._sessions: dict[SessionId, _Session] = {}
        self._per_ip: Counter[str] = Counter()
        self._accepted = 0
        self._next_id = 1
        self._registrations = Registrations(config, clock())
        self._directory = _per_user(config.lookups_per_minute, config.lookup_burst)
        # The message bucket each user's last session ended with: a new session continues it
        # (else disconnecting and logging in again would refill it: 40 more at once each time).
        self._messages_left = KeyedBuckets(config.rate, config.burst, max_keys=MAX_TRACKED_USERS)
        self._turn_allowance = _per_user(config.turn_per_minute, config.turn_burst)

    @property
    def connections(self) -> int:
        return self._accepted

    @property
    def logged_in(self) -> int:
        return len(self.presence)

    def connect(
        self, ip: str, *, invite: str | None = None, cluster_full: bool = False
    ) -> tuple[SessionId, list[Action]]:
        """A socket opened: send the challenge, or refuse it if a connection limit is reached.

        ``invite`` is the invitation token the client dialed with (used only if its login
        registers a new username); ``cluster_full``: the address is at its limit on all the
        instances together (cluster mode), refused like a local one."""
        sid, now = self._next_id, self._clock()
        self._next_id += 1
        bucket = TokenBucket(self.config.rate, self.config.burst, now)
        s = _Session(sid, ip, new_nonce(self._random), now + self.config.login_timeout, bucket)
        s.net = address_group(ip)
        s.invite = invite
        self._sessions[sid] = s
        out: list[Action] = []
        full = self._accepted >= self.config.max_connections
        if full or cluster_full or self._per_ip[s.net] >= self.config.max_connections_per_ip:
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
        challenge = Challenge(self.identity.name, self.identity.server_id, s.nonce)
        self._emit(s, encode(challenge), out)
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

    def logged_in_session(self, sid: SessionId) -> bool:
        """Whether ``sid`` has logged in (and is not closing)."""
        s = self._sessions.get(sid)
        return s is not None and s.state == "open"

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

    def disconnect(self, sid: SessionId) -> Left | None:
        """The socket is gone: forget the session. A logged-in one is reported (cluster mode
        releases its presence and keeps the user's allowances for the next instance)."""
        s = self._sessions.pop(sid, None)
        if s is None:
            return None
        if s.accepted:
            self._accepted -= 1
            self._per_ip[s.net] -= 1
            if self._per_ip[s.net] <= 0:
                del self._per_ip[s.net]
        if s.user is None:
            return None
        self.presence.detach(s.user, sid)
        if s.closed_with is not None:  # a closed one left them then: others may have spent
            return Left(s.user, sid, s.closed_with)
        self._leave_bucket(s.user, s)
        return Left(s.user, sid, self._allowances(s.user, s))

    def _leave_bucket(self, user: str, s: _Session) -> None:
        """``s`` leaves ``user``'s presence: its message bucket is what the user's next login
        continues (unless a newer session holds the user: it has the bucket itself)."""
        if self.presence.lookup(user) is None:
            now = self._clock()
            self._messages_left.restore(user, s.bucket.level(now), now)

    def _login(self, s: _Session, msg: Login, out: list[Action]) -> None:
        if s.user is not None or s.claiming is not None:
            self._error(s, ErrorCode.ALREADY_LOGGED_IN, "this connection is logged in", None, out)
            return
        nonce, s.nonce = s.nonce, b""  # single use, whatever happens next
        refused = self.identity.check_login(msg, nonce)  # certificate, host, signature
        if refused is not None:
            self._login_failed(s, refused.code, refused.message, out)
            return
        owner = self.registry.key_of(msg.user)
        if owner is None:
            try:
                refusal = self._registrations.register(
                    self.registry,
                    msg.user,
                    msg.key,
                    net=s.net,
                    invite=s.invite,
                    now=self._clock(),
                    wall=self._wall_clock(),
                )
            except RegistryUnavailable:  # a network database away: a code clients retry
                message = "the server cannot reach its registry; try again shortly"
                self.stats.logins["refused"] += 1
                _info("login_refused", session=s.id, ip=s.ip, code="registry_unavailable")
                self._close(s, ErrorCode.INTERNAL, message, CloseCode.INTERNAL, out)
                return
            self.stats.registrations["ok" if refusal is None else refusal.code] += 1
            if refusal is not None:
                self._login_failed(s, refusal.code, refusal.message, out)
                return
            _info("registered", session=s.id, user=msg.user, ip=s.ip, invite=s.invite is not None)
        elif owner != msg.key:
            self._login_failed(s, ErrorCode.USERNAME_TAKEN, "username owned by another key", out)
            return
        if self.cluster:  # the bus makes it the one session of the user (signaling.cluster)
            s.state, s.claiming = "claiming", msg.user
            out.append(Claim(s.id, msg.user))
            return
        self._finish_login(s, msg.user, None, out)

    def claimed(self, sid: SessionId, handed: Allowances | None) -> list[Action]:
        """Cluster mode: the login of ``sid`` is now its user's one session everywhere (an
        older one elsewhere was told and closed, and ``handed`` over its allowances)."""
        s = self._sessions.get(sid)
        out: list[Action] = []
        if s is not None and s.state == "claiming" and s.claiming is not None:
            self._finish_login(s, s.claiming, handed, out)
        return out

    def claim_failed(self, sid: SessionId) -> list[Action]:
        """Cluster mode: the bus could not make ``sid`` its user's session (it is down): refuse
        the login with a code clients retry (``internal``), never log in half way."""
        s = self._sessions.get(sid)
        out: list[Action] = []
        if s is not None and s.state == "claiming":
            message = "the server cannot reach its cluster bus; try again shortly"
            self.stats.logins["refused"] += 1
            self._close(s, ErrorCode.INTERNAL, message, CloseCode.INTERNAL, out)
        return out

    def claiming(self, sid: SessionId, user: str) -> bool:
        """Cluster mode: whether ``sid`` still waits for its claim of ``user`` (its connection
        may have closed meanwhile: then nothing may be claimed or kicked for it)."""
        s = self._sessions.get(sid)
        return s is not None and s.state == "claiming" and s.claiming == user

    def superseded(self, sid: SessionId, user: str) -> list[Action]:
        """Cluster mode: a newer login of ``user`` on this instance claimed the user while
        ``sid`` still waited for its own, older claim: close ``sid`` (``replaced``), as newest
        session wins (it would otherwise finish last and close the newer one)."""
        s = self._sessions.get(sid)
        out: list[Action] = []
        if s is not None and s.state == "claiming" and s.claiming == user:
            message = "logged in from another connection"
            self._close(s, ErrorCode.REPLACED, message, CloseCode.REPLACED, out)
        return out

    def kick(self, user: str, sid: SessionId) -> tuple[list[Action], Allowances | None]:
        """Cluster mode: ``user`` logged in on another instance: close ``sid`` (``replaced``)
        if it is still that user's, and hand its allowances over."""
        s = self._sessions.get(sid)
        out: list[Action] = []
        if s is None or s.state == "closing" or user not in (s.user, s.claiming):
            return out, None
        handed = self._allowances(user, s)
        message = "logged in from another connection"
        self._close(s, ErrorCode.REPLACED, message, CloseCode.REPLACED, out)
        return out, handed

    def _finish_login(
        self, s: _Session, user: str, handed: Allowances | None, out: list[Action]
    ) -> None:
        old_sid = self.presence.attach(user, s.id)
        s.user, s.state, s.claiming = user, "open", None
        self.stats.logins["ok"] += 1
        if handed is not None:
            self._restore(s, user, handed)
        old = self._sessions.get(old_sid) if old_sid is not None else None
        if old is None:  # the user's last session, if any, has ended: continue its bucket
            now = self._clock()
            left = self._messages_left.level(user, now)
            s.bucket.restore(min(s.bucket.level(now), left), now)
        else:
            s.bucket = old.bucket  # logging in again does not reset the rate limit
            s.peers = old.peers
            self._close(
                old,
                ErrorCode.REPLACED,
                "logged in from another connection",
                CloseCode.REPLACED,
                out,
            )
        self._emit(s, encode(Welcome(user)), out)
        _info("login", session=s.id, user=user, ip=s.ip, replaced=old_sid)

    def _allowances(self, user: str, s: _Session | None) -> Allowances:
        """``user``'s token levels now; with ``s``, its message bucket too."""
        now = self._clock()
        messages = s.bucket.level(now) if s is not None else None
        directory = self._directory.level(user, now)
        turn = self._turn_allowance.level(user, now)
        return Allowances(messages, directory, turn, self._wall_clock())

    def _restore(self, s: _Session, user: str, handed: Allowances) -> None:
        """Continue ``handed`` (refilled for the time since), never above what we hold here."""
        now, elapsed = self._clock(), max(0.0, self._wall_clock() - handed.at)
        c = self.config
        if handed.messages is not None:
            s.bucket.restore(handed.messages + elapsed * c.rate, now)
        for buckets, level, per_minute in (
            (self._directory, handed.directory, c.lookups_per_minute),
            (self._turn_allowance, handed.turn, c.turn_per_minute),
        ):
            refilled = level + elapsed * per_minute / 60.0
            buckets.restore(user, min(refilled, buckets.level(user, now)), now)

    def _login_failed(self, s: _Session, code: str, message: str, out: list[Action]) -> None:
        self.stats.logins["refused"] += 1
        _info("login_refused", session=s.id, ip=s.ip, code=code)
        self._close(s, code, message, CloseCode.LOGIN_FAILED, out)

    def _route(self, s: _Session, user: str, msg: Send, out: list[Action]) -> None:
        if not self._directory_allows(s, user, msg.to):
            self._error(s, ErrorCode.RATE_LIMITED, "too many new names; slow down", msg.id, out)
            return
        target_id = self.presence.lookup(msg.to)
        target = self._sessions.get(target_id) if target_id is not None else None
        if target is None or target.state != "open":
            if self.cluster and target is None:  # maybe elsewhere; the registry is asked
                out.append(Forward(s.id, msg.id, msg.to, user, msg.body))  # only if not
            elif self.registry.exists(msg.to):
                self._error(s, ErrorCode.OFFLINE, "recipient is not connected", msg.id, out)
            else:
                self._error(s, ErrorCode.UNKNOWN_USER, "no such user", msg.id, out)
            return
        if target.pending >= self.config.max_queue:
            # Drop the envelope and tell the sender; never close the recipient for what others
            # sent it, or any user could end anyone's session (its answers have room of their
            # own). A dead reader is dropped by the keepalive; one that does not read its own
            # answers overflows in _emit.
            self._error(
                s, ErrorCode.QUEUE_FULL, "recipient is not keeping up; dropped", msg.id, out
            )
            return
        self._emit(target, deliver_frame(user, msg.body), out)
        self.stats.envelopes_routed += 1
        # The recipient may answer for free; the sender gains nothing by sending (else one
        # delivered envelope would let it watch whether the recipient is online for ever,
        # without the recipient ever answering).
        _remember_peer(target, user)
        self._emit(s, encode(Sent(msg.id)), out)

    def forwarded(self, sid: SessionId, msg_id: str, to: str, outcome: Outcome) -> list[Action]:
        """Cluster mode: what became of the envelope ``sid`` sent to ``to`` on another instance
        (one answer: ``sent``, or an error saying it was not delivered or not confirmed)."""
        self.stats.forwarded[str(outcome)] += 1
        s = self._sessions.get(sid)
        out: list[Action] = []
        if s is None or s.state != "open":
            return out
        if outcome is Outcome.OK:
            self._emit(s, encode(Sent(msg_id)), out)
        elif not self._known(to):  # asked now, not for every forward
            self._error(s, ErrorCode.UNKNOWN_USER, "no such user", msg_id, out)
        elif outcome is Outcome.QUEUE_FULL:
            message = "recipient is not keeping up; dropped"
            self._error(s, ErrorCode.QUEUE_FULL, message, msg_id, out)
        elif outcome is Outcome.OFFLINE:
            self._error(s, ErrorCode.OFFLINE, "recipient is not connected", msg_id, out)
        else:
            message = "recipient's server did not confirm delivery; it was not retried"
            self._error(s, ErrorCode.OFFLINE, message, msg_id, out)
        return out

    def _known(self, user: str) -> bool:
        """Whether ``user`` is registered; True if the registry cannot say (then the sender is
        answered with what became of the envelope, rather than not at all)."""
        try:
            return self.registry.exists(user)
        except RegistryUnavailable:
            return True

    def deliver_remote(self, from_user: str, to: str, frame: str) -> tuple[list[Action], Outcome]:
        """Cluster mode: another instance forwards an envelope from ``from_user`` to ``to``,
        as the ``deliver`` frame it built (:func:`~signaling.protocol.deliver_frame`).
        Delivered to ``to``'s session here (the same checks as a local one), or not, and why."""
        target_id = self.presence.lookup(to)
        target = self._sessions.get(target_id) if target_id is not None else None
        out: list[Action] = []
        if target is None or target.state != "open":
            return out, Outcome.OFFLINE
        if target.pending >= self.config.max_queue:
            return out, Outcome.QUEUE_FULL
        self._emit(target, frame, out)
        self.stats.envelopes_routed += 1
        _remember_peer(target, from_user)
        return out, Outcome.OK

    def sessions_by_user(self) -> list[tuple[str, SessionId]]:
        """Every logged-in (open) session: what the cluster registers again after a restart."""
        return [(s.user, s.id) for s in self._sessions.values() if s.user and s.state == "open"]

    def connected(self, sid: SessionId) -> bool:
        """Whether ``sid`` is still connected here, in any state (ids are never reused, so a
        presence entry naming one that is not is stale for good)."""
        return sid in self._sessions

    def connections_per_address(self) -> dict[str, int]:
        """Accepted connections by address group (what the per-IP limit counts)."""
        return dict(self._per_ip)

    def _lookup(self, s: _Session, msg: Lookup, out: list[Action]) -> None:
        """Key directory: the key that owns a username (clients pin it on first use)."""
        if s.user is None or not self._directory_allows(s, s.user, msg.user):
            self._error(s, ErrorCode.RATE_LIMITED, "too many lookups; slow down", msg.id, out)
            return
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
        if not self._turn_allowance.take(user, self._clock()):
            message = "too many TURN credentials; reuse the last ones"
            self._error(s, ErrorCode.RATE_LIMITED, message, msg_id, out)
            return
        username, password = turn_credentials(turn.secret, user, turn.ttl, self._wall_clock())
        creds = TurnCredentials(msg_id, username, password, turn.ttl, turn.uris)
        self._emit(s, encode(creds), out)

    def _directory_allows(self, s: _Session, user: str, name: str) -> bool:
        """Naming ``name`` costs ``user`` a directory token unless it is themself or a peer of
        this session. Decided before anything about ``name`` is looked at, so a refusal says
        nothing about it."""
        if name == user or name in s.peers:
            return True
        return self._directory.take(user, self._clock())

    def _error(
        self, s: _Session, code: str, message: str, msg_id: str | None, out: list[Action]
    ) -> None:
        self.stats.errors[str(code)] += 1
        self._emit(s, encode(Error(str(code), message, msg_id)), out)

    def _emit(self, s: _Session, frame: str, out: list[Action]) -> bool:
        """Queue a frame for ``s``; a full queue closes ``s`` (queue_full) and returns False.

        Deliveries stop at ``max_queue`` (the caller checks: the envelope is dropped, the
        sender told); the session's own answers have :data:`ANSWER_ROOM` more. Else anyone
        could fill a slow reader's queue with envelopes and have its next request, answered
        into a full queue, close it: only a session that does not read its own answers is
        closed."""
        if s.state == "closing":
            return False
        if s.pending >= self.config.max_queue + ANSWER_ROOM:
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
            s.closed_with = self._allowances(s.user, s)
            self._leave_bucket(s.user, s)  # a login before the socket is gone continues it
        _info("close", session=s.id, code=str(code))


def _per_user(per_minute: float, burst: int) -> KeyedBuckets:
    return KeyedBuckets(per_minute / 60.0, burst, max_keys=MAX_TRACKED_USERS)


def _remember_peer(s: _Session, name: str) -> None:
    s.peers[name] = None
    s.peers.move_to_end(name)
    if len(s.peers) > MAX_PEERS:
        s.peers.popitem(last=False)


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
