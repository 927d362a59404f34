"""``voice id``: show the identity, back it up, restore it, protect it with a passphrase.

    voice id                          create the identity on first use, then show it
    voice id --export FILE            write an encrypted backup to FILE (a new file)
    voice id --import FILE [--force]  restore a backup; --force replaces another identity
    voice id --set-passphrase         protect identity.key with a (new) passphrase
    voice id --remove-passphrase      keep identity.key without a passphrase again

``--set-passphrase`` also goes with ``--import``, so that a restored key never touches the disk
in clear. Passphrases come from the variables of :mod:`voice.cli.passphrase` or a prompt. Every
step that can fail (a wrong passphrase, a damaged backup, another identity in the way) fails
before anything is written, and every write is atomic.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from voice.cli.context import Settings
from voice.cli.passphrase import BACKUP_PASSPHRASE_VAR, NEW_PASSPHRASE_VAR
from voice.crypto.backup import Installed, install_identity, read_backup, write_backup
from voice.crypto.identity import Fingerprint, Identity, KeyFileInfo, key_file_info
from voice.errors import UsageError
from voice.exitcodes import ExitCode, for_exception

__all__ = ["IdOptions", "cmd_id"]


@dataclass(frozen=True)
class IdOptions:
    export: Path | None = None
    import_from: Path | None = None
    force: bool = False
    set_passphrase: bool = False
    remove_passphrase: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> IdOptions:
        return cls(
            export=args.export,
            import_from=args.import_from,
            force=args.force,
            set_passphrase=args.set_passphrase,
            remove_passphrase=args.remove_passphrase,
        )

    def check(self) -> None:
        if self.force and self.import_from is None:
            raise UsageError("--force goes with --import FILE")
        if self.set_passphrase and (self.export is not None or self.remove_passphrase):
            raise UsageError("--set-passphrase goes alone, or with --import FILE")


def cmd_id(settings: Settings, options: IdOptions | None = None) -> ExitCode:
    options = IdOptions() if options is None else options
    options.check()
    try:
        return _dispatch(settings, options)
    except OSError as exc:
        if for_exception(exc) is not None:
            raise
        # a full or failing disk: every write here is atomic, so nothing changed
        print(f"voice: {exc}: nothing was changed", file=settings.err)
        return ExitCode.LOCAL_ERROR


def _dispatch(settings: Settings, options: IdOptions) -> ExitCode:
    if options.export is not None:
        return _export(settings, options.export)
    if options.import_from is not None:
        return _import(settings, options.import_from, options)
    if options.set_passphrase:
        return _set_passphrase(settings)
    if options.remove_passphrase:
        return _remove_passphrase(settings)
    return _show(settings)


def _info(path: Path) -> KeyFileInfo | None:
    try:
        return key_file_info(path)
    except FileNotFoundError:
        return None


def _print_fingerprint(settings: Settings, fp: Fingerprint) -> None:
    if settings.user is not None:
        print(f"User:         {settings.user}", file=settings.out)
    print(f"Fingerprint:  {fp.human}", file=settings.out)
    print(f"              {fp.machine}", file=settings.out)


def _show(settings: Settings) -> ExitCode:
    """Create the identity on first use, then show it (the same on every later run).

    A protected key is shown without its passphrase (its public key is in clear).
    """
    out, path = settings.out, settings.identity_path
    info = _info(path)
    if info is None:
        fp = settings.identity().fingerprint
        print(f"Created a new identity key: {path} (mode 0600)", file=out)
    else:
        fp = info.fingerprint
        state = "protected by a passphrase" if info.protected else "no passphrase"
        print(f"Identity key: {path} ({state})", file=out)
    _print_fingerprint(settings, fp)
    print(
        "Give your contacts this fingerprint (in person or over a channel you trust); "
        "they check it with `voice trust`.",
        file=out,
    )
    if info is None:
        print(
            "Back it up now (voice id --export FILE): a lost key cannot be recovered, and your "
            "username stays bound to it until the server's admin releases it.",
            file=out,
        )
    return ExitCode.OK


def _export(settings: Settings, target: Path) -> ExitCode:
    path = settings.identity_path
    if _info(path) is None:
        raise UsageError(f"there is no identity key at {path} to export (voice id creates one)")
    if target.exists() or target.is_symlink():
        raise UsageError(f"{target} already exists: a backup never overwrites a file")
    identity = settings.identity()  # asks for its passphrase if it has one
    passphrase = settings.passphrases.new(BACKUP_PASSPHRASE_VAR, f"the backup {target}")
    try:
        write_backup(identity, target, passphrase)
    except FileExistsError:
        raise UsageError(f"{target} already exists: a backup never overwrites a file") from None
    print(f"Wrote an encrypted backup of your identity to {target} (mode 0600).", file=settings.out)
    _print_fingerprint(settings, identity.fingerprint)
    print(
        "Keep it away from this computer, and its passphrase away from the file: whoever has "
        "both can be you. Restore it with: voice id --import FILE",
        file=settings.out,
    )
    return ExitCode.OK


def _import(settings: Settings, source: Path, options: IdOptions) -> ExitCode:
    out, path = settings.out, settings.identity_path
    passphrase = settings.passphrases.existing(BACKUP_PASSPHRASE_VAR, f"the backup {source}")
    identity = read_backup(source, passphrase)  # nothing is written before this succeeds
    before = _info(path)

    def new_passphrase() -> str:
        return settings.passphrases.new(NEW_PASSPHRASE_VAR, str(path))

    lock = new_passphrase if options.set_passphrase else None
    result = install_identity(identity, path, force=options.force, passphrase=lock)
    if result is Installed.UNCHANGED and lock is not None:
        identity.replace_key_file(path, passphrase=lock())
        print(f"{path} already holds this identity: now sealed with the new passphrase.", file=out)
    elif result is Installed.UNCHANGED:
        print(f"{path} already holds this identity: the key was not replaced.", file=out)
    else:
        print(f"Restored the identity from {source} into {path} (mode 0600).", file=out)
    if result is Installed.REPLACED and before is not None:
        print(f"It replaced the identity {before.fingerprint.human}.", file=out)
    _print_fingerprint(settings, identity.fingerprint)
    protected = key_file_info(path).protected
    if not protected:
        print("The key file has no passphrase (voice id --set-passphrase adds one).", file=out)
    return ExitCode.OK


def _set_passphrase(settings: Settings) -> ExitCode:
    out, path = settings.out, settings.identity_path
    before = _info(path)
    if before is None:  # a new key that is never on the disk in clear
        identity = Identity.generate()
        identity.save(path, passphrase=settings.passphrases.new(NEW_PASSPHRASE_VAR, str(path)))
        print(f"Created a new identity key: {path} (mode 0600)", file=out)
    else:
        identity = settings.identity()  # the current passphrase first, if there is one
        passphrase = settings.passphrases.new(NEW_PASSPHRASE_VAR, str(path))
        identity.replace_key_file(path, passphrase=passphrase)
    verb = "changed" if before is not None and before.protected else "set"
    print(f"Passphrase {verb}: {path} is sealed with it (Argon2id).", file=out)
    _print_fingerprint(settings, identity.fingerprint)
    print(
        "Every command that uses the key asks for it (scripts: set VOICE_PASSPHRASE). Without "
        "it the key is lost: keep a backup (voice id --export FILE).",
        file=out,
    )
    return ExitCode.OK


def _remove_passphrase(settings: Settings) -> ExitCode:
    out, path = settings.out, settings.identity_path
    before = _info(path)
    if before is None:
        raise UsageError(f"there is no identity key at {path}")
    if not before.protected:
        print(f"{path} has no passphrase: nothing changed.", file=out)
        return ExitCode.OK
    identity = settings.identity()
    identity.replace_key_file(path)
    print(f"{path} is stored without a passphrase now (mode 0600).", file=out)
    _print_fingerprint(settings, identity.fingerprint)
    return ExitCode.OK
