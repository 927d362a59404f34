"""Where the CLI keeps its state, and the settings every subcommand shares.

The config directory (``--config-dir``, default ``$XDG_CONFIG_HOME/voice``) holds::

    identity.key    the Ed25519 identity (0600, optionally under a passphrase; see
                    voice.crypto.identity)
    contacts.json   pinned contacts (0600; see voice.crypto.contacts)
    user            the username last used to log in (so --user can be left out next time)
    servers.json    each server's id, pinned on first login (see voice.cli.serverpins)
    replay.json     recent calls, so a restart does not reopen the replay window

The directory is created 0700. It and every file in it are read and written only through
voice.crypto.privatefile: a directory that is not ours or that group or others can write to, and
a file that is not ours, is readable by others or is a symlink, are refused (InsecureKeyFile,
exit code 12) with the command that fixes it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from voice.cli.passphrase import Passphrases
from voice.cli.serverpins import ServerPins
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity, read_secret_file, replace_private_file
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
    server: str  # the first address: its pin, contacts and call log stand for the deployment
    user: str | None
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    passphrases: Passphrases = field(default_factory=Passphrases)
    ca_file: Path | None = None  # --ca / VOICE_CA: the CAs that verify wss:// (else the system's)
    insecure: bool = False  # --insecure: allow plain ws:// to a host that is not loopback
    fallback_servers: tuple[str, ...] = ()  # --server A,B,C: the same deployment's B and C

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
    def call_log_path(self) -> Path:
        return self.config_dir / "calls.json"

    @property
    def server_pins_path(self) -> Path:
        return self.config_dir / "servers.json"

    def server_pins(self) -> ServerPins:
        return ServerPins(self.server_pins_path)

    def identity(self) -> Identity:
        """The identity, created on first use; a protected key asks for its passphrase."""
        return Identity.load_or_create(
            self.identity_path, passphrase=self.passphrases.unlock(self.identity_path)
        )

    def contacts(self) -> ContactBook:
        return ContactBook(self.contacts_path, server=self.server)  # contacts are per server

    def require_user(self) -> str:
        if self.user is None:
            raise UsageError("no username: pass --user NAME (or set VOICE_USER) once")
        return check_username(self.user)

    def remember_user(self, user: str) -> None:
        """Keep the username for next time (not secret, but private: a 0600 file written under
        a random temporary name with O_EXCL|O_NOFOLLOW, then renamed into place)."""
        if self.stored_user() == user:
            return
        replace_private_file(self.user_path, (user + "\n").encode("ascii"))

    def stored_user(self) -> str | None:
        """The remembered username, or None. A ``user`` file or config directory that others
        could have written is refused (InsecureKeyFile), not silently used."""
        try:
            text = read_secret_file(self.user_path).decode("ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return text if _USERNAME.fullmatch(text) else None


def server_urls(text: str) -> tuple[str, ...]:
    """``--server``: one address, or several of one deployment separated by commas (tried in
    that order; every one must present the same server id, pinned under the first)."""
    urls = tuple(dict.fromkeys(u.strip() for u in text.split(",") if u.strip()))
    if not urls:
        raise UsageError("--server needs at least one address")
    return urls


def resolve_settings(
    *,
    config_dir: str | None,
    server: str | None,
    user: str | None,
    ca: str | None = None,
    insecure: bool = False,
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
    urls = server_urls(server or env.get("VOICE_SERVER") or DEFAULT_SERVER)
    settings = Settings(
        config_dir=directory,
        server=urls[0],
        fallback_servers=urls[1:],
        user=None,
        out=out or sys.stdout,
        err=err or sys.stderr,
        passphrases=Passphrases(env),
        ca_file=Path(ca_file).expanduser() if (ca_file := ca or env.get("VOICE_CA")) else None,
        insecure=insecure,
    )
    chosen = user or env.get("VOICE_USER") or settings.stored_user()
    return dataclasses.replace(settings, user=chosen)
