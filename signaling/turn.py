"""Short-lived TURN credentials in coturn's REST-API format (``use-auth-secret``).

username = ``"<expiry unix time>:<label>"``, password = base64(HMAC-SHA1(secret, username)).
coturn recomputes the password from the shared secret and refuses it after the expiry time.
The label is the user's pseudonym (:func:`turn_label`), not the username: STUN and TURN carry
the username in clear, so the relay, and anyone on the path of ``turn:`` over UDP or TCP,
would learn who relays. It is the same for every credential of a user (coturn's per-user
quotas still hold), and the operator, who has the secret, can tell whose it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnConfig:
    secret: bytes
    uris: tuple[str, ...]
    ttl: int = 3600


def turn_label(secret: bytes, user: str) -> str:
    """``user``'s pseudonym in TURN usernames: 96 bits of HMAC-SHA256 under the secret."""
    return hmac.new(secret, b"turn-user\0" + user.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def turn_credentials(secret: bytes, user: str, ttl: int, now: float) -> tuple[str, str]:
    """(username, password) valid until ``now + ttl`` (wall-clock seconds)."""
    username = f"{int(now) + ttl}:{turn_label(secret, user)}"
    digest = hmac.new(secret, username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")
