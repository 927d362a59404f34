"""Field checks for the wire parser: strict base64, usernames, ids, hosts, server ids, nesting.

Each check raises :class:`FrameError` with the wire error code for what is wrong, and carries
the client's message id when there is one, so the ``error`` frame can name the request.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from signaling.errors import FrameError

USERNAME_RE = re.compile(r"[a-z][a-z0-9_-]{2,31}", re.ASCII)
MAX_ID_CHARS = 64
SERVER_ID_RE = re.compile(r"[a-z0-9-]{16,64}", re.ASCII)  # a deployment's id (challenge)
MAX_HOST_CHARS = 253
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.ASCII)
# A string token always matches (to its closing quote, or to the end if unterminated), so the
# scan never restarts at each quote of an unterminated string: linear, not quadratic.
_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def is_username(name: object) -> bool:
    """3-32 characters of ``a-z 0-9 _ -``, starting with a letter."""
    return isinstance(name, str) and USERNAME_RE.fullmatch(name) is not None


def is_server_id(value: object) -> bool:
    """16-64 characters of ``a-z 0-9 -`` (generated: 32 hex digits)."""
    return isinstance(value, str) and SERVER_ID_RE.fullmatch(value) is not None


def normalize_host(host: str) -> str:
    """The one spelling of a host name that a login binds: what the client dialed, as in its URL.

    IP addresses in their compressed form (IPv6 without brackets, no zone); DNS names in lower
    case, IDNA (punycode) for non-ASCII labels, without the trailing dot, labels of
    ``a-z 0-9 _ -``. Raises ValueError for anything else.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in text:
        raise ValueError("a host with a zone index is not accepted")
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"{host!r} is not a valid host name") from None
    labels = name.split(".")
    if not 0 < len(name) <= MAX_HOST_CHARS or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"{host!r} is not a valid host name")
    return name


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, the only binary encoding on the wire."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str) -> bytes:
    """Decode canonical standard base64 with padding; raise ValueError for anything else."""
    if not text.isascii():
        raise ValueError("not ASCII")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    if base64.b64encode(raw).decode("ascii") != text:  # stray bits, missing padding
        raise ValueError("not canonical base64")
    return raw


def readable_id(obj: dict[str, Any]) -> str | None:
    """The frame's message id if it is a valid one, to echo in an error; else None."""
    value = obj.get("id")
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
        return value
    return None


def check_depth(text: str, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` before the JSON parser recurses into it."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper: the common case costs two C-level scans
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise FrameError("too_deep", f"JSON nested deeper than {max_depth} levels")
        elif token in "]}":
            depth -= 1


def field_str(
    obj: dict[str, Any],
    key: str,
    msg_id: str | None = None,
    *,
    max_chars: int | None = None,
    min_chars: int = 1,
) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise FrameError("bad_type", f"{key!r} must be a string", id=msg_id)
    if len(value) < min_chars or (max_chars is not None and len(value) > max_chars):
        raise FrameError("bad_type", f"{key!r} has the wrong length", id=msg_id)
    return value


def field_id(obj: dict[str, Any]) -> str:
    value = obj["id"]
    if not isinstance(value, str):
        raise FrameError("bad_type", "'id' must be a string")
    if not 0 < len(value) <= MAX_ID_CHARS:
        raise FrameError("bad_id", f"'id' must be 1-{MAX_ID_CHARS} characters")
    return value


def field_host(obj: dict[str, Any], key: str) -> str:
    """A host name in the form :func:`normalize_host` gives (the client normalises first)."""
    value = obj[key]
    if not isinstance(value, str) or not 0 < len(value) <= MAX_HOST_CHARS:
        raise FrameError("bad_type", f"{key!r} must be a host name of 1-253 characters")
    try:
        canonical = normalize_host(value)
    except ValueError:
        canonical = ""
    if canonical != value:
        raise FrameError("bad_type", f"{key!r} must be a host name in its normal form")
    return value


def field_username(obj: dict[str, Any], key: str, msg_id: str | None = None) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise FrameError("bad_type", f"{key!r} must be a string", id=msg_id)
    if not is_username(value):
        raise FrameError(
            "bad_username",
            f"{key!r} must be 3-32 characters of a-z 0-9 _ -, starting with a letter",
            id=msg_id,
        )
    return value


def field_b64(
    obj: dict[str, Any],
    key: str,
    msg_id: str | None = None,
    *,
    exact: int | None = None,
    max_len: int | None = None,
) -> bytes:
    value = obj[key]
    if not isinstance(value, str):
        raise FrameError("bad_type", f"{key!r} must be a base64 string", id=msg_id)
    if max_len is not None and len(value) > 4 * ((max_len + 2) // 3):
        raise FrameError("body_too_large", f"{key!r} is over {max_len} bytes", id=msg_id)
    if exact is not None and len(value) != 4 * ((exact + 2) // 3):
        raise FrameError("bad_base64", f"{key!r} must be base64 of {exact} bytes", id=msg_id)
    try:
        raw = b64decode_strict(value)
    except ValueError:
        raise FrameError("bad_base64", f"{key!r} is not strict base64", id=msg_id) from None
    if max_len is not None and len(raw) > max_len:
        raise FrameError("body_too_large", f"{key!r} is over {max_len} bytes", id=msg_id)
    return raw
