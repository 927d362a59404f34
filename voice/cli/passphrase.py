"""Where the CLI's passphrases come from: an environment variable, or a prompt on the terminal.

    VOICE_PASSPHRASE          unlocks a protected identity.key (every command that uses the key)
    VOICE_NEW_PASSPHRASE      the new passphrase of `voice id --set-passphrase`
    VOICE_BACKUP_PASSPHRASE   the passphrase of a backup (`voice id --export` / `--import`)

A variable that is set (even to an empty string, which is then refused as too short for a new
passphrase) wins. Otherwise, if stdin is a terminal, the passphrase is asked with ``getpass``
(no echo), twice for a new one. Otherwise :class:`~voice.errors.PassphraseRequired` names the
variable to set. Variables suit scripts and tests; on a shared machine, prefer the prompt (other
users of the same account can read a process's environment). Passphrases are never printed or
logged.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from voice.errors import PassphraseRequired, UsageError

__all__ = [
    "BACKUP_PASSPHRASE_VAR",
    "KEY_PASSPHRASE_VAR",
    "MIN_PASSPHRASE_LENGTH",
    "NEW_PASSPHRASE_VAR",
    "Passphrases",
]

KEY_PASSPHRASE_VAR = "VOICE_PASSPHRASE"
NEW_PASSPHRASE_VAR = "VOICE_NEW_PASSPHRASE"
BACKUP_PASSPHRASE_VAR = "VOICE_BACKUP_PASSPHRASE"
MIN_PASSPHRASE_LENGTH = 8


def _terminal_prompt(prompt: str) -> str | None:
    """``getpass`` when stdin is a terminal; None when there is nobody to ask."""
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    return getpass.getpass(prompt)


@dataclass(frozen=True)
class Passphrases:
    """Passphrases from ``env`` or from ``ask`` (the terminal by default)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    ask: Callable[[str], str | None] = _terminal_prompt

    def existing(self, variable: str, what: str) -> str:
        """The passphrase of ``what`` (a file), from ``variable`` or asked once."""
        value = self.env.get(variable)
        if value is not None:
            return value
        answer = self.ask(f"Passphrase for {what}: ")
        if answer is None:
            raise PassphraseRequired(
                f"{what} is protected by a passphrase: set {variable}, or run voice in a "
                "terminal to be asked for it"
            )
        return answer

    def new(self, variable: str, what: str) -> str:
        """A new passphrase for ``what``, from ``variable`` or asked twice; at least
        MIN_PASSPHRASE_LENGTH characters."""
        value = self.env.get(variable)
        if value is None:
            value = self.ask(f"New passphrase for {what}: ")
            if value is None:
                raise PassphraseRequired(
                    f"a passphrase for {what} is needed: set {variable}, or run voice in a "
                    "terminal to be asked for it"
                )
            if self.ask("The same passphrase again: ") != value:
                raise UsageError("the two passphrases differ: nothing was changed")
        if len(value) < MIN_PASSPHRASE_LENGTH:
            raise UsageError(
                f"a passphrase needs at least {MIN_PASSPHRASE_LENGTH} characters (a few "
                "unrelated words are best): nothing was changed"
            )
        return value

    def unlock(self, key_path: Path) -> Callable[[], str]:
        """The passphrase source for the identity key at ``key_path`` (asked only if needed)."""
        return lambda: self.existing(KEY_PASSPHRASE_VAR, str(key_path))
