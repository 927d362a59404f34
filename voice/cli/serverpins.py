"""The signaling server's name, pinned per server address on first login (trust on first use).

The login signature covers the server's name from its challenge. A hostile server could relay
another server's challenge and forward our signature there, logging in as us elsewhere; the
client refuses to sign a challenge whose name differs from the one pinned for that address
(:class:`~voice.errors.ServerNameChanged`). Kept in ``servers.json`` in the config directory
(0600, replaced atomically and fsync'ed): ``{"ws://host:port": "server-name", ...}``. If a
server was really renamed, delete its line.
"""

from __future__ import annotations

import json
from pathlib import Path

from voice.crypto.identity import replace_private_file
from voice.errors import UsageError

MAX_PINS = 1_000  # a hand-edited or hostile file cannot make us read without bound


class ServerPins:
    """Server address -> pinned server name, backed by one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, url: str) -> str | None:
        return self._read().get(url)

    def pin(self, url: str, name: str) -> None:
        """Pin ``name`` for ``url`` unless a name is pinned already (never overwrites one)."""
        pins = self._read()
        if url in pins:
            return
        pins[url] = name
        data = (json.dumps(pins, indent=1, sort_keys=True) + "\n").encode("utf-8")
        replace_private_file(self.path, data)

    def _read(self) -> dict[str, str]:
        try:
            if self.path.stat().st_size > MAX_PINS * 600:
                raise UsageError(f"{self.path} is too large: fix or delete it")
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"{self.path} is unreadable ({exc}): fix or delete it") from None
        valid = isinstance(data, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        )
        if not valid or len(data) > MAX_PINS:
            raise UsageError(f"{self.path} is malformed: fix or delete it")
        return dict(data)
