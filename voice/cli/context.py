"""Where the CLI keeps its state, and the settings every subcommand shares.

The config directory (``--config-dir``, default ``$XDG_CONFIG_HOME/voice``) holds::

    identity.key    the Ed25519 identity (0600; see voice.crypto.identity)
    contacts.json   pinned contacts (0600; see voice.crypto.contacts)
    user            the username last used to log in (so --user can be left out next time)
    servers.json    each server's name, pinned on first login (see voice.cli.serverpins)
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from voice.cli.serverpins import ServerPins
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.errors import UsageError

DEFAULT_SERVER = "ws://127.0.0.1:8765"
_USERNAME = re.compile(r"[a-z][a-z0-9_-]{2,31}")


def check_username(name: str) -> str:
    """Usernames are 3-32 characters of a-z 0-9 _ -, starting with a letter (as on the server)."""
    if not _USERNAME.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a valid username: 3-32 characters of a-z 0-9 _ -, "
            "starting with a letter"
        )
    return name


@dataclass(frozen=True)
class Settings:
    """The global options, resolved: flags, then environment, then the config directory."""

    config_dir: Path
    server: str
    user: str | None
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr

    @property
    def identity_path(self) -> Path:
        return self.config_dir / "identity.key"

    @property
    def contacts_path(self) -> Path:
        return self.config_dir / "contacts.json"

    @property
    def user_path(self) -> Path:
        return self.config_dir / "user"

    @property
    def replay_journal_path(self) -> Path:
        return self.config_dir / "replay.json"

    @property
    def server_pins_path(self) -> Path:
        return self.config_dir / "servers.json"

    def server_pins(self) -> ServerPins:
        return ServerPins(self.server_pins_path)

    def identity(self) -> Identity:
        return Identity.load_or_create(self.identity_path)

    def contacts(self) -> ContactBook:
        return ContactBook(self.contacts_path)

    def require_user(self) -> str:
        if self.user is None:
            raise UsageError("no username: pass --user NAME (or set VOICE_USER) once")
        return check_username(self.user)

    def remember_user(self, user: str) -> None:
        """Keep the username for next time (not secret; plain 0600 text file)."""
        if self.stored_user() == user:
            return
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.user_path.with_name(f".user.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(user + "\n")
        os.replace(tmp, self.user_path)

    def stored_user(self) -> str | None:
        try:
            text = self.user_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _USERNAME.fullmatch(text) else None


def resolve_settings(
    *,
    config_dir: str | None,
    server: str | None,
    user: str | None,
    env: dict[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> Settings:
    env = dict(os.environ) if env is None else env
    if config_dir:
        directory = Path(config_dir).expanduser()
    else:
        base = env.get("XDG_CONFIG_HOME", "")
        root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
        directory = root / "voice"
    settings = Settings(
        config_dir=directory,
        server=server or env.get("VOICE_SERVER") or DEFAULT_SERVER,
        user=None,
        out=out or sys.stdout,
        err=err or sys.stderr,
    )
    chosen = user or env.get("VOICE_USER") or settings.stored_user()
    return Settings(settings.config_dir, settings.server, chosen, settings.out, settings.err)
