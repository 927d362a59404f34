"""Who may register a new username: the registration policy. Pure; clocks are passed in.

A login with a name nobody owns is a registration. The policy (setting ``registration``):

``open``
    Anyone may register a free name, within a rate per address (an IPv6 /64 counts as one), a
    rate for the whole server, and a cap on registered names (``max_users``). The rates are
    kept in the registry (:meth:`signaling.registry.Registry.take`), so every instance that
    shares it counts them together: a deployment, not each of its instances.
``invite``
    A new name needs an invitation token (``voice-signaling admin invite``).
``closed``
    No new names, except with an invitation bound to that very name: how an operator adds one
    person, or gives a name back to someone who lost their key. ``open`` and ``invite`` honour
    those too.

A valid invitation skips the rates, not the cap. There are two kinds, both made by
``voice-signaling admin`` (:mod:`signaling.admin`):

* a token, for any name or bound to one, that the client presents in the URL it dials
  (``ws://host:port/?invite=TOKEN``; the adapter reads it);
* a name bound to a key fingerprint (``admin release NAME --fingerprint FP``): the first login
  of that name with that key registers it, with no token, so a user who lost their key only
  tells the operator the fingerprint ``voice id`` prints, as they would tell a contact.

A name with an outstanding invitation bound to it is reserved for that invitation. Registration
is checked only after the login signature verified, so it costs the key's owner.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from signaling.config import Config
from signaling.protocol import ErrorCode
from signaling.ratelimit import KeyedBuckets, TokenBucket
from signaling.registry import Allowance, Registry

MAX_INVITE_CHARS = 64
_INVITE = re.compile(r"[A-Za-z0-9_-]{16,64}")
MAX_TRACKED_ADDRESSES = 65_536


class Policy(StrEnum):
    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str


_ADDRESS_LIMITED = Refusal(
    ErrorCode.REGISTRATION_LIMITED, "too many new usernames from your address; later"
)
_SERVER_LIMITED = Refusal(ErrorCode.REGISTRATION_LIMITED, "too many new usernames; try later")


def valid_invite(token: str) -> bool:
    """Tokens are URL-safe base64 text (``secrets.token_urlsafe``), 16-64 characters."""
    return _INVITE.fullmatch(token) is not None


def key_invitation(digest: bytes) -> str:
    """The registry token of an invitation for the key whose SHA-256 is ``digest`` (never a
    valid URL token: the colon keeps the two kinds apart)."""
    return "key:" + digest.hex()


def parse_fingerprint(text: str) -> bytes:
    """The 32-byte digest from a fingerprint as ``voice id`` prints it: ``ed25519:<64 hex>``
    or 52 base32 letters (spaces and dashes ignored, any case). ValueError otherwise."""
    compact = text.strip()
    if compact.lower().startswith("ed25519:"):
        try:
            digest = bytes.fromhex(compact[len("ed25519:") :])
        except ValueError:
            digest = b""
    else:
        letters = compact.replace(" ", "").replace("-", "").upper()
        try:
            digest = base64.b32decode(letters + "====") if len(letters) == 52 else b""
        except binascii.Error:
            digest = b""
    if len(digest) != 32:
        raise ValueError("a fingerprint is 'ed25519:' and 64 hex digits, or 52 base32 letters")
    return digest


class Registrations:
    """Decides, and performs, the registration of new names under ``config``'s policy."""

    def __init__(self, config: Config, now: float) -> None:
        self.policy = Policy(config.registration)
        self.max_users = config.max_users
        self._per_address = KeyedBuckets(
            config.registrations_per_ip_per_hour / 3600.0,
            config.registration_ip_burst,
            max_keys=MAX_TRACKED_ADDRESSES,
        )
        self._server = TokenBucket(
            config.registrations_per_hour / 3600.0, config.registration_burst, now
        )
        self._server_rate = Allowance(
            "server", config.registrations_per_hour / 3600.0, config.registration_burst
        )
        self._address_per_second = config.registrations_per_ip_per_hour / 3600.0
        self._address_burst = config.registration_ip_burst

    def _address_rate(self, net: str) -> Allowance:
        return Allowance(f"address {net}", self._address_per_second, self._address_burst)

    def register(
        self,
        registry: Registry,
        user: str,
        key: bytes,
        *,
        net: str,
        invite: str | None,
        now: float,
        wall: float,
    ) -> Refusal | None:
        """Register ``user`` (nobody owns it) for ``key``; None on success, else why not.

        ``net`` is the address group the per-address rate counts, ``now`` the monotonic clock
        (rates), ``wall`` the wall clock (invitation expiry).
        """
        if registry.count() >= self.max_users:
            return Refusal(ErrorCode.REGISTRATION_LIMITED, "this server has all the users it takes")
        if invite is not None:
            # An invitation for any name takes neither a reserved name nor one on a closed server.
            bound_only = self.policy is Policy.CLOSED or registry.reserved(user, wall)
            if valid_invite(invite) and registry.redeem(
                invite, user, key, wall, bound_only=bound_only
            ):
                return None
            return Refusal(ErrorCode.BAD_INVITE, "the invitation is not valid for this username")
        if registry.reserved(user, wall):
            if registry.redeem(key_invitation(hashlib.sha256(key).digest()), user, key, wall):
                return None
            return Refusal(ErrorCode.USERNAME_TAKEN, "username reserved for an invitation")
        if self.policy is Policy.INVITE:
            return Refusal(ErrorCode.REGISTRATION_CLOSED, "new usernames need an invitation")
        if self.policy is Policy.CLOSED:
            return Refusal(ErrorCode.REGISTRATION_CLOSED, "this server registers no new usernames")
        # This instance's own buckets answer first, without a round trip. They hold what the
        # shared ones granted here, or what a shared refusal said was left, never less than
        # the shared ones, so a refusal here is the shared answer too: once refused, a flood
        # from one address (or from everyone, past the server's rate) stays off the database
        # until the shared bucket may have refilled.
        if self._per_address.level(net, now) < 1.0:
            return _ADDRESS_LIMITED
        if self._server.level(now) < 1.0:
            return _SERVER_LIMITED
        # The address first: one address over its rate must not use up the server's allowance.
        used_up = registry.take((self._address_rate(net), self._server_rate), wall)
        if used_up is not None:
            if used_up.allowance is self._server_rate:
                self._server.restore(used_up.tokens, now)
                return _SERVER_LIMITED
            self._per_address.restore(net, used_up.tokens, now)
            return _ADDRESS_LIMITED
        self._per_address.take(net, now)
        self._server.take(now)
        if not registry.claim(user, key):
            return Refusal(ErrorCode.USERNAME_TAKEN, "username owned by another key")
        return None
