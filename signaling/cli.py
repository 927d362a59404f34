"""``voice-signaling`` / ``python -m signaling``: run the server until SIGINT or SIGTERM.

Every setting is a flag (``--max-queue``) and an environment variable
(``VOICE_SIGNALING_MAX_QUEUE``); flags win. See :class:`signaling.config.Config` for the list.
``voice-signaling admin ...`` runs the operator commands of :mod:`signaling.admin` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence

from signaling import admin
from signaling.config import ENV_PREFIX, Config
from signaling.errors import ConfigError
from signaling.logs import configure_logging
from signaling.registry_open import open_registry
from signaling.server import serve_signaling


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-signaling",
        description="Untrusted signaling server: routes sealed envelopes between users.",
    )
    defaults = Config()
    for f in dataclasses.fields(Config):
        default = getattr(defaults, f.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        if f.name == "turn_secret":
            shown = "(none)"
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=f.name.upper(),
            help=f"env {ENV_PREFIX}{f.name.upper()}; default {shown!s}",
        )
    return parser


async def run(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # the registry the db setting names: an SQLite file or a postgresql:// URL
    async with serve_signaling(config, registry=open_registry(config.db)):
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["admin"]:  # voice-signaling admin ...: registry commands (signaling.admin)
        return admin.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_sources(os.environ, vars(args))
    except ConfigError as exc:
        print(f"voice-signaling: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    try:
        asyncio.run(run(config))
    except OSError as exc:  # e.g. the port is taken
        print(f"voice-signaling: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found on start: an unreadable certificate, a bad server id file
        print(f"voice-signaling: {exc}", file=sys.stderr)
        return 2
    return 0
