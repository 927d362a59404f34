"""Server settings: every limit has a safe default and can be set by flag or environment.

Each field ``x_y`` is the environment variable ``VOICE_SIGNALING_X_Y`` and the flag ``--x-y``
(flags win over the environment, the environment over the defaults). Lists are comma-separated.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from signaling.errors import ConfigError
from signaling.forwarded import parse_networks
from signaling.redisconn import parse_url
from signaling.turn import TurnConfig
from signaling.wire import MAX_ID_CHARS, is_server_id, normalize_host

ENV_PREFIX = "VOICE_SIGNALING_"


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"  # WebSocket listen address
    port: int = 8765  # 0 picks a free port
    http_host: str = ""  # /healthz and /metrics; empty means the same as host
    http_port: int = 8766  # 0 picks a free port
    db: str = "signaling.sqlite3"  # registry file; ":memory:" forgets on exit
    name: str = "voice-signaling"  # server name, bound into every login signature
    server_id: str = ""  # per deployment, in every login; empty: generated once, kept by db
    tls_cert: str = ""  # PEM certificate chain: serve wss:// (logins bind its hash); empty: ws://
    tls_key: str = ""  # PEM private key of tls_cert
    public_host: tuple[str, ...] = field(default=())  # names clients dial; empty: cert's/loopback
    max_frame_bytes: int = 65_536  # largest frame accepted (bigger: error, close 1009)
    max_body_bytes: int = 32_768  # largest decoded envelope body
    max_queue: int = 32  # frames waiting to be written per connection
    rate: float = 20.0  # messages per second per user (token bucket)
    burst: int = 40  # messages a user may send at once before the rate applies
    login_timeout: float = 10.0  # seconds from connect to login
    ping_interval: float = 5.0  # seconds a client may be silent before it is pinged; with the
    ping_timeout: float = 10.0  # timeout, a dead client is dropped (and offline) in 15-17 s
    close_timeout: float = 5.0  # seconds to finish a close before dropping the socket
    max_connections_per_ip: int = 32  # an IPv6 /64 counts as one address
    trusted_proxies: tuple[str, ...] = field(default=())  # addresses/networks of TLS-terminating
    # proxies (HAProxy): their connections count as the last X-Forwarded-For address
    max_connections: int = 10_000  # at most; lowered to fit RLIMIT_NOFILE (signaling.admission)
    max_handshakes: int = 1_024  # sockets not logged in yet, in all; lowered to fit too
    registration: str = "open"  # who may register a new username: open, invite or closed
    registration_ip_burst: int = 5  # open: new usernames one address may register at once,
    registrations_per_ip_per_hour: float = 10.0  # then this many an hour
    registration_burst: int = 50  # open: new usernames the whole server registers at once,
    registrations_per_hour: float = 200.0  # then this many an hour
    max_users: int = 100_000  # registered usernames; past it no new one is registered
    lookup_burst: int = 20  # per user: lookups and sends naming someone new, at once,
    lookups_per_minute: float = 20.0  # then this many a minute
    turn_burst: int = 10  # per user: TURN credentials at once,
    turn_per_minute: float = 2.0  # then this many a minute
    turn_secret: str = ""  # coturn static-auth-secret; empty disables TURN credentials
    turn_uris: tuple[str, ...] = field(default=())  # ICE servers handed out with the TURN
    # credentials: stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp], turns:HOST[:PORT]
    turn_ttl: int = 3_600  # seconds the TURN credentials stay valid
    log_level: str = "INFO"
    redis: str = ""  # redis[s]://[[USER]:PASSWORD@]HOST:PORT/DB or unix:///PATH: act as one
    # server with the other instances on that Redis (presence, routing, limits;
    # signaling.cluster); empty: alone

    def __post_init__(self) -> None:
        positive = ("max_frame_bytes", "max_body_bytes", "max_queue", "rate", "burst")
        for name in (*positive, "login_timeout", "close_timeout", "turn_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        for name in ("ping_interval", "ping_timeout", "max_connections_per_ip", "max_connections"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        limits = ("max_handshakes", "max_users", "registrations_per_ip_per_hour")
        for name in (*limits, "registrations_per_hour", "lookups_per_minute", "turn_per_minute"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        for name in ("registration_ip_burst", "registration_burst", "lookup_burst", "turn_burst"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.registration not in ("open", "invite", "closed"):
            raise ConfigError("registration must be open, invite or closed")
        for name in ("port", "http_port"):
            if not 0 <= getattr(self, name) <= 65_535:
                raise ConfigError(f"{name} must be 0-65535")
        if not 0 < len(self.name) <= 255 or not self.name.isprintable():
            raise ConfigError("name must be 1-255 printable characters")
        _check_identity(self)
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None
        if self.redis:
            try:
                parse_url(self.redis)
            except ValueError as exc:
                raise ConfigError(f"redis: {exc}") from None
        if len(self.turn_uris) > MAX_ICE_URIS:
            raise ConfigError(f"turn_uris: at most {MAX_ICE_URIS} URIs")
        for uri in self.turn_uris:
            check_ice_uri(uri)
        if self.max_body_bytes * 4 // 3 + 2 * MAX_ID_CHARS + 200 > self.max_frame_bytes:
            raise ConfigError("max_frame_bytes must leave room for a base64 body of max_body_bytes")
        if self.burst < 1:
            raise ConfigError("burst must be >= 1")

    @property
    def turn(self) -> TurnConfig | None:
        """TURN settings, or None when no secret or no URI is configured."""
        if not self.turn_secret or not self.turn_uris:
            return None
        return TurnConfig(self.turn_secret.encode("utf-8"), self.turn_uris, self.turn_ttl)

    @property
    def http_bind(self) -> str:
        return self.http_host or self.host

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_sources(
        cls, env: Mapping[str, str], overrides: Mapping[str, str | None] | None = None
    ) -> Config:
        """Defaults, then ``VOICE_SIGNALING_*`` from ``env``, then non-None ``overrides``."""
        values: dict[str, Any] = {}
        defaults = cls()
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if overrides is not None and overrides.get(f.name) is not None:
                raw = overrides[f.name]
            if raw is not None:
                values[f.name] = _convert(f.name, type(getattr(defaults, f.name)), raw)
        return cls(**values)


MAX_ICE_URIS = 16  # what a turn_credentials frame may carry
_ICE_URI = re.compile(
    r"(?P<scheme>stun|turns?):(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+)"
    r"(?::(?P<port>\d{1,5}))?(?:\?transport=(?P<transport>udp|tcp))?"
)


def check_ice_uri(uri: str) -> None:
    """A STUN or TURN URI the clients can use (RFC 7064 / 7065), else ConfigError:
    ``stun:HOST[:PORT]``, ``turn:HOST[:PORT][?transport=udp|tcp]``,
    ``turns:HOST[:PORT][?transport=tcp]`` (TLS over TCP); HOST a name, IPv4 or [IPv6]."""
    m = _ICE_URI.fullmatch(uri)
    if m is None:
        raise ConfigError(
            f"turn_uris: {uri!r} is not stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp] "
            "or turns:HOST[:PORT][?transport=tcp]"
        )
    host, port = m["host"], m["port"]
    if port is not None and not 0 < int(port) < 65_536:
        raise ConfigError(f"turn_uris: {uri!r}: port must be 1-65535")
    if m["scheme"] == "stun" and m["transport"] is not None:
        raise ConfigError(f"turn_uris: {uri!r}: a stun: URI takes no transport")
    if m["scheme"] == "turns" and m["transport"] == "udp":
        raise ConfigError(f"turn_uris: {uri!r}: turns: runs over TCP (DTLS is not supported)")
    try:
        if host.startswith("["):
            if ipaddress.ip_address(host[1:-1]).version != 6:
                raise ValueError(host)
        elif not host.replace(".", "").isdigit():
            normalize_host(host)
        else:
            ipaddress.IPv4Address(host)
    except ValueError:
        raise ConfigError(f"turn_uris: {uri!r}: {host!r} is not a host name or address") from None


def _check_identity(c: Config) -> None:
    """TLS files come in pairs; a set server id and public host names are well formed."""
    if bool(c.tls_cert) != bool(c.tls_key):
        raise ConfigError("tls_cert and tls_key go together: set both or neither")
    if c.server_id and not is_server_id(c.server_id):
        raise ConfigError("server_id must be 16-64 characters of a-z 0-9 -")
    for host in c.public_host:
        try:
            normalize_host(host[2:] if host.startswith("*.") else host)
        except ValueError:
            raise ConfigError(f"public_host: {host!r} is not a host name") from None


def _convert(name: str, kind: type, raw: str) -> Any:
    try:
        if kind is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a valid {kind.__name__}") from None
    return raw
