"""Short-lived TURN credentials in coturn's REST-API format (``use-auth-secret``).

username = ``"<expiry unix time>:<user>"``, password = base64(HMAC-SHA1(secret, username)).
coturn recomputes the password from the shared secret and refuses it after the expiry time.
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


def turn_credentials(secret: bytes, user: str, ttl: int, now: float) -> tuple[str, str]:
    """(username, password) valid until ``now + ttl`` (wall-clock seconds)."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret, username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")
