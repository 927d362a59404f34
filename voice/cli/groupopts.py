"""The options of ``voice group`` (kept apart from :mod:`voice.cli.group`, which loads the
media stack, so that building the parser stays cheap)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from voice.cli.audio import AudioChoice
from voice.errors import UsageError
from voice.group import messages as gm
from voice.net.transport import is_loopback_host, normalize_host

__all__ = ["COMMANDS", "GROUP_HELP", "GroupOptions", "add_group_arguments"]

GROUP_HELP = "a group call of up to 8 people, end-to-end encrypted through a Janus SFU"
COMMANDS = "commands: invite USER, remove USER, members, code, leave"


def add_group_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "join"), help="start a group, or join one")
    parser.add_argument(
        "--sfu",
        metavar="URL",
        help="start: the Janus to use, wss://HOST:8989/ (env VOICE_SFU); members are told it "
        "in the sealed invite",
    )
    parser.add_argument(
        "--invite", metavar="USER", action="append", default=[], help="start: invite USER"
    )
    parser.add_argument(
        "--auto-accept", action="store_true", help="join: accept the first invite at once"
    )
    parser.add_argument("--duration", metavar="S", type=float, help="leave S seconds after joining")
    parser.add_argument(
        "--timeout", metavar="S", type=float, help="join: give up if no invite comes in S seconds"
    )
    said = parser.add_argument_group("what you send (one of)")
    said.add_argument("--input", metavar="DEVICE", help="microphone: pyaudio name or index")
    said.add_argument("--play", metavar="WAV", type=Path, help="send a WAV file instead")
    said.add_argument("--tone", metavar="HZ", type=float, help="send a sine tone")
    said.add_argument("--silence", action="store_true", help="send silence")
    said.add_argument(
        "--no-audio-processing", action="store_true", help="no echo cancellation (microphone)"
    )
    heard = parser.add_argument_group("what you hear (one of): everyone, mixed")
    heard.add_argument("--output", metavar="DEVICE", help="speaker: pyaudio name or index")
    heard.add_argument("--record", metavar="WAV", type=Path, help="record what you hear")
    heard.add_argument("--no-output", action="store_true", help="discard what you hear")


@dataclass(frozen=True)
class GroupOptions:
    start: bool
    sfu: str | None
    invite: tuple[str, ...]
    auto_accept: bool
    duration: float | None
    timeout: float | None
    audio: AudioChoice

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GroupOptions:
        start = args.action == "start"
        sfu = args.sfu or os.environ.get("VOICE_SFU") or None
        if start and sfu is None:
            raise UsageError("voice group start needs --sfu URL (or VOICE_SFU): the Janus to use")
        if not start and (args.invite or args.sfu):
            raise UsageError("--invite and --sfu are for 'voice group start'")
        for user in args.invite:
            if not gm.USERNAME.fullmatch(user):
                raise UsageError(f"not a username: {user!r}")
        if sfu is not None:
            parts = urlsplit(sfu)
            if parts.scheme not in ("wss", "ws") or not parts.hostname:
                raise UsageError("--sfu is a wss:// URL (ws:// only for a Janus on this machine)")
            local = is_loopback_host(normalize_host(parts.hostname))
            if parts.scheme == "ws" and not local and not getattr(args, "insecure", False):
                raise UsageError(
                    f"refusing plain {sfu}: the room's pin and everyone's addresses would cross "
                    "the network unprotected. Use wss://, or pass --insecure to allow it"
                )
        return cls(
            start=start,
            sfu=sfu,
            invite=tuple(dict.fromkeys(args.invite)),
            auto_accept=args.auto_accept,
            duration=args.duration,
            timeout=args.timeout,
            audio=AudioChoice.from_args(args),
        )
