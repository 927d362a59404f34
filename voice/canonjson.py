"""Canonical JSON, the wire format of the call and group control messages: one object per
payload, UTF-8, keys sorted, no whitespace, no NaN, no duplicate key.

:func:`dumps` writes it; :func:`loads_object` reads one object strictly (size cap, UTF-8, no
duplicate keys, no NaN or Infinity) and raises the caller's error type, so each protocol keeps
its own error. A parser then compares ``dumps(obj)`` with the payload: only the canonical form
is accepted, so one message has one encoding.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads_object"]


def dumps(obj: object) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def loads_object(data: bytes, max_bytes: int, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in ``data``; ``error(reason)`` for anything else."""
    if not isinstance(data, bytes):
        raise error("payload must be bytes")
    if len(data) > max_bytes:
        raise error(f"message larger than {max_bytes} bytes")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise error("duplicate key")
        return obj

    def reject_constant(name: str) -> Any:
        raise error(f"{name} is not JSON")

    try:
        obj = json.loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=reject_constant
        )
    except error:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error("payload is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise error("payload must be a JSON object")
    return obj
