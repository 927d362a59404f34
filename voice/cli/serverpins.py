"""Each server address's deployment id, pinned on first login (trust on first use).

Every challenge carries the server's name and its id, random per deployment and kept by the
server (``docs/protocol.md``). The client pins the id per address on first login and refuses to
sign a challenge with another id (:class:`~voice.errors.ServerNameChanged`, exit code 4): another
deployment now answers at that address. (The name is the same default on most servers, so it
cannot tell deployments apart; the relay of another server's challenge is stopped by the TLS
binding of the login itself, pinned or not.) Kept in ``servers.json`` in the config directory
(0600, replaced atomically and fsync'ed): ``{"wss://host:port": {"name": N, "id": ID}, ...}``.
A pin written before servers had ids holds only the name (``"wss://host:port": "name"``): the
name is checked, and the first login whose name matches adds the id. If a server was really
reinstalled, delete its line. Like every private file it is read through
:func:`~voice.crypto.identity.read_secret_file`: a pin file that another user owns (who could
otherwise pin a relay's id for us), that others can read or write, or that is a symlink, is
refused with InsecureKeyFile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from voice.crypto.identity import read_secret_file, replace_private_file
from voice.errors import UsageError

MAX_PINS = 1_000  # a hand-edited or hostile file cannot make us read without bound


@dataclass(frozen=True)
class ServerPin:
    name: str
    server_id: str | None = None  # None: pinned before servers had ids (the name is checked)


class ServerPins:
    """Server address -> pinned server id (and name), backed by one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, url: str) -> ServerPin | None:
        return self._read().get(url)

    def pin(self, url: str, name: str, server_id: str) -> None:
        """Pin ``server_id`` (and ``name``) for ``url`` on first login. Never overwrites an id;
        a pin without one gains ``server_id`` only if its name is ``name``."""
        pins = self._read()
        old = pins.get(url)
        if old is not None and (old.server_id is not None or old.name != name):
            return
        pins[url] = ServerPin(name, server_id)
        out = {u: _stored(p) for u, p in pins.items()}
        data = (json.dumps(out, indent=1, sort_keys=True) + "\n").encode("utf-8")
        replace_private_file(self.path, data)

    def _read(self) -> dict[str, ServerPin]:
        try:
            if self.path.stat().st_size > MAX_PINS * 600:
                raise UsageError(f"{self.path} is too large: fix or delete it")
            data = json.loads(read_secret_file(self.path).decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"{self.path} is unreadable ({exc}): fix or delete it") from None
        if not isinstance(data, dict) or len(data) > MAX_PINS:
            raise UsageError(f"{self.path} is malformed: fix or delete it")
        pins: dict[str, ServerPin] = {}
        for url, value in data.items():
            pin = _pin_of(value)
            if not isinstance(url, str) or pin is None:
                raise UsageError(f"{self.path} is malformed: fix or delete it")
            pins[url] = pin
        return pins


def _stored(pin: ServerPin) -> str | dict[str, str]:
    return pin.name if pin.server_id is None else {"name": pin.name, "id": pin.server_id}


def _pin_of(value: object) -> ServerPin | None:
    """A pin as stored: a name alone (before server ids), or ``{"name": N, "id": ID}``."""
    if isinstance(value, str):
        return ServerPin(value)
    if isinstance(value, dict) and set(value) == {"name", "id"}:
        name, server_id = value["name"], value["id"]
        if isinstance(name, str) and isinstance(server_id, str):
            return ServerPin(name, server_id)
    return None
