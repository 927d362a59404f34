"""``voice-signaling admin``: operator commands on the registry (the servers may be running).

    voice-signaling admin release NAME [--fingerprint FP | --invite] [--ttl S] --db PATH
    voice-signaling admin invite [--user NAME [--fingerprint FP]] [--count N] [--ttl S] --db PATH
    voice-signaling admin show NAME --db PATH

``release`` frees a username: the way back for someone who lost their identity key. With
``--fingerprint`` (the new key's, as ``voice id`` prints it) the name is reserved for that key:
its owner logs in as usual and gets the name back, and nobody else can take it meanwhile,
under any registration policy. With ``--invite`` it is reserved for a token instead, printed
here, that the person presents once by dialing ``ws://HOST:PORT/?invite=TOKEN``. With neither,
the name is free for whoever registers it first. ``invite`` prints tokens, one a line, for the
``invite`` policy; ``--user`` binds them to a name (which reserves it), ``--fingerprint``
reserves the name for a key instead of printing a token. ``show`` prints who owns a name.
Tokens are printed once and stored hashed. ``--db`` (an SQLite file or a ``postgresql://``
URL) defaults to ``VOICE_SIGNALING_DB``. A running server sees every change at its next registry
query (SQLite), or within milliseconds (PostgreSQL: every instance is notified).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
import time
from collections.abc import Sequence

from signaling.config import ENV_PREFIX, Config
from signaling.errors import ConfigError
from signaling.registration import key_invitation, parse_fingerprint
from signaling.registry import Registry, RegistryUnavailable
from signaling.registry_open import open_registry
from signaling.wire import is_username

DEFAULT_TTL = 7 * 24 * 3600  # an invitation is good for a week unless told otherwise
MAX_COUNT = 1_000


def new_token() -> str:
    """A fresh invitation token: 128 random bits, URL-safe (fits ``?invite=`` as is)."""
    return secrets.token_urlsafe(16)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-signaling admin", description="Operator commands on the username registry."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="free a username (its owner lost the key)")
    release.add_argument("name")
    how = release.add_mutually_exclusive_group()
    how.add_argument("--fingerprint", help="reserve the name for the key with this fingerprint")
    how.add_argument("--invite", action="store_true", help="reserve it for a token, printed")
    invite = commands.add_parser("invite", help="print invitation tokens")
    invite.add_argument("--user", help="bind the invitation to this username (reserves it)")
    invite.add_argument("--fingerprint", help="with --user: for this key, instead of a token")
    invite.add_argument("--count", type=int, default=1)
    show = commands.add_parser("show", help="print the key fingerprint that owns a username")
    show.add_argument("name")
    for sub in (release, invite):
        sub.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="invitation lifetime, s")
    db = os.environ.get(ENV_PREFIX + "DB", Config().db)
    for sub in (release, invite, show):
        sub.add_argument(
            "--db", default=db, help=f"registry file or postgresql:// URL (env {ENV_PREFIX}DB)"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    digest, problem = _check(args)
    if problem is not None:
        print(f"voice-signaling admin: {problem}", file=sys.stderr)
        return 2
    try:
        registry = open_registry(args.db)
    except (ConfigError, RegistryUnavailable) as exc:  # unreachable, or a newer schema
        print(f"voice-signaling admin: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    try:
        return _run(args, registry, digest)
    except RegistryUnavailable as exc:
        print(f"voice-signaling admin: {exc}", file=sys.stderr)
        return 1
    finally:
        registry.close()


def _run(args: argparse.Namespace, registry: Registry, digest: bytes) -> int:
    """Carry out the command on the open registry; the exit code."""
    if args.command == "show":
        key = registry.key_of(args.name)
        if key is None:
            _note(f"{args.name} is not registered")
            return 1
        print(f"{args.name} ed25519:{hashlib.sha256(key).hexdigest()}")
        return 0
    expires = time.time() + args.ttl
    user = args.name if args.command == "release" else args.user
    if args.command == "release":
        released = registry.release(user)
        _note(f"{user}: {'released' if released else 'was not registered'}")
        if not (args.invite or digest):
            return 0 if released else 1
    if digest:
        registry.add_invite(key_invitation(digest), user, expires)
        _note(f"{user} is reserved for the key {args.fingerprint}: it logs in as usual")
        return 0
    for _ in range(1 if args.command == "release" else args.count):
        token = new_token()
        registry.add_invite(token, user, expires)
        print(token)
    if user is not None:
        _note(f"{user} is reserved: log in once with --server 'ws://HOST:PORT/?invite=TOKEN'")
    return 0


def _check(args: argparse.Namespace) -> tuple[bytes, str | None]:
    """The fingerprint's digest (or b""), and what is wrong with the arguments (or None)."""
    for name in (getattr(args, "name", None), getattr(args, "user", None)):
        if name is not None and not is_username(name):
            return b"", f"{name!r} is not a username"
    if getattr(args, "ttl", 1) <= 0 or not 0 < getattr(args, "count", 1) <= MAX_COUNT:
        return b"", f"--ttl must be > 0 and --count 1-{MAX_COUNT}"
    if args.db in ("", ":memory:"):
        return b"", "--db must name the server's registry file"
    fingerprint = getattr(args, "fingerprint", None)
    if fingerprint is None:
        return b"", None
    if args.command == "invite" and args.user is None:
        return b"", "--fingerprint needs --user"
    try:
        return parse_fingerprint(fingerprint), None
    except ValueError as exc:
        return b"", str(exc)


def _note(text: str) -> None:
    print(text, file=sys.stderr)
