"""Challenge-response login: fresh nonces, and checking a login signature against them.

No passwords: a user proves possession of the Ed25519 key that owns the username. The signed
bytes (:func:`signaling.protocol.login_message`) bind the nonce to this server's name, the
username and the key, so a signature is useless on another connection, server or account.
"""

from __future__ import annotations

from collections.abc import Callable

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from signaling.messages import Login
from signaling.protocol import login_message

NONCE_BYTES = 32
RandomBytes = Callable[[int], bytes]


def new_nonce(random_bytes: RandomBytes) -> bytes:
    """A fresh 32-byte challenge; ``random_bytes`` is injected so tests can pin it."""
    nonce = random_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("random source returned the wrong number of bytes")
    return nonce


def verify_login(server: str, login: Login, nonce: bytes) -> bool:
    """True only if ``login.sig`` is the key's signature over this server, user and nonce."""
    message = login_message(server, login.user, login.key, nonce)
    try:
        VerifyKey(login.key).verify(message, login.sig)
    except (CryptoError, ValueError, TypeError):
        return False
    return True
