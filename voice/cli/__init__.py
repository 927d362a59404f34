"""The ``voice`` command: identity, contacts, devices, calls, and the demo.

``main()`` parses the arguments, runs one subcommand and returns its exit code
(:mod:`voice.exitcodes`). Expected failures become one clear line on stderr and their exit code;
anything else is a bug and keeps its traceback. Nothing here logs keys, SAS values or audio.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from voice.cli.context import Settings, resolve_settings
from voice.cli.doctor import DOCTOR_HELP, add_doctor_arguments
from voice.errors import UsageError
from voice.exitcodes import ExitCode, for_exception

__all__ = ["build_parser", "main", "wants_screen"]

_EPILOG = "exit codes:\n" + "\n".join(
    f"  {c.value:>3}  {c.name:<18}  {c.meaning}" for c in ExitCode
)


def _add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options, accepted before or after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config-dir",
        default=default,
        metavar="DIR",
        help="where the identity and contacts live (default $XDG_CONFIG_HOME/voice)",
    )
    parser.add_argument(
        "--server",
        default=default,
        metavar="URL",
        help="signaling server, wss://HOST:PORT (env VOICE_SERVER; default ws://127.0.0.1:8765; "
        "plain ws:// only to loopback unless --insecure); several instances of one deployment "
        "as URL,URL,...: tried in turn, each must show the server id pinned for the first",
    )
    parser.add_argument(
        "--ca",
        default=default,
        metavar="FILE",
        help="PEM file of the CAs that verify the server's certificate, instead of the system "
        "CAs (env VOICE_CA)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="allow plain ws:// to a server that is not loopback: no TLS, and a login that a "
        "server on the path can relay",
    )
    parser.add_argument(
        "--user",
        default=default,
        metavar="NAME",
        help="your username (env VOICE_USER; remembered in the config dir after a login)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="log progress to stderr (-vv for debug); never logs keys, SAS or audio",
    )


def _add_audio(parser: argparse.ArgumentParser) -> None:
    said = parser.add_argument_group("what you send (one of)")
    said.add_argument("--input", metavar="DEVICE", help="microphone: pyaudio name or index")
    said.add_argument("--play", metavar="WAV", type=Path, help="send a WAV file instead")
    said.add_argument("--tone", metavar="HZ", type=float, help="send a sine tone")
    said.add_argument("--silence", action="store_true", help="send silence")
    heard = parser.add_argument_group("what you hear (one of)")
    heard.add_argument("--output", metavar="DEVICE", help="speaker: pyaudio name or index")
    heard.add_argument("--record", metavar="WAV", type=Path, help="record what you hear")
    heard.add_argument("--no-output", action="store_true", help="discard what you hear")
    said.add_argument(
        "--no-audio-processing",
        action="store_true",
        help="send the microphone as it is: no echo cancellation, noise suppression or gain "
        "control (on by default for a microphone, never for --play/--tone/--silence)",
    )
    call = parser.add_argument_group("call")
    call.add_argument(
        "--duration", metavar="S", type=float, help="hang up S seconds after connecting"
    )
    call.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        help="give up if nobody answers (call; default 60); stop listening after S seconds, "
        "once the call in progress ended (listen; default: never)",
    )
    call.add_argument("--no-prompt", action="store_true", help="do not ask to confirm the SAS")
    call.add_argument(
        "--relay",
        choices=("auto", "always", "never"),
        default="auto",
        help="media through the server's TURN relay: auto (default) relays unless the peer is a "
        "verified contact, so strangers never see your addresses; always relays (the call fails "
        "without a relay); never goes direct (host and STUN addresses only)",
    )


def _add_plain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plain",
        action="store_true",
        help="line mode: the call as lines of text instead of the call screen (always so when "
        "stdin or stdout is not a terminal, and with --no-prompt, --duration, listen "
        "--auto-answer or listen --timeout)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice",
        description="End-to-end encrypted voice calls. Audio is SRTP keyed by the two clients; "
        "the signaling server and any relay never see the keys.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_globals(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_globals(common, suppress=True)
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=False,
        help="in a terminal, no command opens the call screen (as 'voice ui')",
    )

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    ident = add("id", "create your identity on first use, and show its fingerprint")
    what = ident.add_mutually_exclusive_group()
    what.add_argument(
        "--export",
        metavar="FILE",
        type=Path,
        help="write an encrypted backup of your identity to a new FILE (passphrase: asked, "
        "or env VOICE_BACKUP_PASSPHRASE)",
    )
    what.add_argument(
        "--import",
        dest="import_from",
        metavar="FILE",
        type=Path,
        help="restore your identity from a backup (passphrase: asked, or env "
        "VOICE_BACKUP_PASSPHRASE)",
    )
    what.add_argument(
        "--remove-passphrase",
        action="store_true",
        help="store the key file without a passphrase again",
    )
    ident.add_argument(
        "--force",
        action="store_true",
        help="with --import: replace another identity that is here (lost unless backed up)",
    )
    ident.add_argument(
        "--set-passphrase",
        action="store_true",
        help="protect the key file with a new passphrase (asked, or env VOICE_NEW_PASSPHRASE); "
        "every use then asks for it (or env VOICE_PASSPHRASE)",
    )
    listen = add(
        "listen",
        "stay online and take call after call, at a prompt or automatically; reconnects to "
        "the server by itself",
    )
    listen.add_argument("--auto-answer", action="store_true", help="accept every call at once")
    _add_audio(listen)
    _add_plain(listen)
    call = add("call", "call USER")
    call.add_argument("peer", metavar="USER")
    _add_audio(call)
    _add_plain(call)
    ui = add("ui", "the call screen (terminal UI): home, incoming calls, the call, its end")
    ui.add_argument("peer", metavar="USER", nargs="?", help="call USER at once")
    _add_audio(ui)
    add("contacts", "list pinned contacts and whether they are verified")
    trust = add(
        "trust",
        "verify USER by the fingerprint USER gave you out of band: accepts a changed key, or "
        "makes USER a verified contact (its key looked up on the server, pinned only if it has "
        "that fingerprint)",
    )
    trust.add_argument("peer", metavar="USER")
    trust.add_argument("fingerprint", metavar="FINGERPRINT", nargs="+")
    from voice.cli.groupopts import GROUP_HELP, add_group_arguments

    add_group_arguments(add("group", GROUP_HELP))
    add("devices", "list audio devices for --input and --output")
    add_doctor_arguments(add("doctor", DOCTOR_HELP))
    demo = add("demo", "a real encrypted call between two temporary local users")
    demo.add_argument("--keep", metavar="DIR", type=Path, help="keep the recordings in DIR")
    demo.add_argument(
        "--seconds", type=float, default=None, help="call length (default: the speech sample)"
    )
    demo.add_argument(
        "--group",
        metavar="N",
        type=int,
        nargs="?",
        const=4,
        default=None,
        help="a group call of N (3-8, default 4) local users through a private Janus",
    )
    return parser


class _Sentences(logging.Formatter):
    """Without -v a warning reaches the user as one sentence: no timestamp, no logger name and
    never a traceback (those come with -v)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"voice: {record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(verbosity: int) -> None:
    """Warnings and up to stderr (-v: info, -vv: debug, with times, names and tracebacks).
    Like ``logging.basicConfig``, nothing changes where logging is already set up."""
    root = logging.getLogger()
    if root.handlers:
        return
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    if verbosity <= 0:
        handler.setFormatter(_Sentences())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def wants_screen(args: argparse.Namespace, settings: Settings) -> bool:
    """Whether ``call`` or ``listen`` runs as the call screen: in a terminal (stdin and stdout),
    unless ``--plain`` or a script's option (``--no-prompt``, ``--duration``,
    ``listen --auto-answer``, ``listen --timeout``) asks for line mode, which ends by itself."""
    if args.command not in ("call", "listen") or args.plain or args.no_prompt:
        return False
    if args.duration is not None:  # a timed call is a script's: it must end by itself
        return False
    if args.command == "listen" and (args.auto_answer or args.timeout is not None):
        return False
    return _is_terminal(sys.stdin) and _is_terminal(settings.out)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def _run(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from voice.cli import local

    command: str | None = args.command
    if command is None:  # bare ``voice``: the call screen in a terminal, else the usage
        if not (_is_terminal(sys.stdin) and _is_terminal(settings.out)):
            raise UsageError("a command is needed when not in a terminal (see 'voice --help')")
        args = build_parser().parse_args(["ui"])
        command = "ui"
    if command == "id":
        from voice.cli.identity import IdOptions, cmd_id

        return cmd_id(settings, IdOptions.from_args(args))
    if command == "contacts":
        return local.cmd_contacts(settings)
    if command == "trust":
        return local.cmd_trust(settings, args.peer, " ".join(args.fingerprint))
    if command == "devices":
        return local.cmd_devices(settings)
    if command == "group":
        from voice.cli.group import cmd_group
        from voice.cli.groupopts import GroupOptions

        return asyncio.run(cmd_group(settings, GroupOptions.from_args(args)))
    if command == "demo" and args.group is not None:
        from voice.group.demo import run_group_demo

        return asyncio.run(run_group_demo(n=args.group, out=settings.out, keep=args.keep))
    if command == "demo":
        from voice.demo import run_demo

        return asyncio.run(run_demo(out=settings.out, keep=args.keep, seconds=args.seconds))
    if command == "doctor":
        from voice.cli.doctor import DoctorOptions, cmd_doctor

        return cmd_doctor(settings, DoctorOptions.from_args(args))
    from voice.cli import calls, listen  # loads aiortc: only for calls
    from voice.cli.options import CallOptions

    options = CallOptions.from_args(args)
    if command == "ui" or wants_screen(args, settings):
        from voice.ui.shell import run_ui  # loads textual: only for the screen

        return asyncio.run(run_ui(settings, options, args.peer if command != "listen" else None))
    if command == "listen":
        return asyncio.run(listen.listen(settings, options))
    return asyncio.run(calls.call(settings, args.peer, options))


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``voice`` with ``argv``; return the exit code (see ``voice --help``)."""
    args = build_parser().parse_args(argv)
    if argv is None:  # the real command, not a call from code: kill -USR1 shows its tasks
        from voice.cli import taskdump

        taskdump.install()
    _configure_logging(args.verbose)
    err = err or sys.stderr
    try:
        settings = resolve_settings(  # may read the config dir (the remembered username)
            config_dir=args.config_dir,
            server=args.server,
            user=args.user,
            ca=args.ca,
            insecure=args.insecure,
            out=out,
            err=err,
        )
        return int(_run(args, settings))
    except KeyboardInterrupt:
        print("voice: interrupted", file=err)
        return int(ExitCode.OK)
    except Exception as exc:
        code = for_exception(exc)
        if code is None:
            raise
        print(f"voice: {exc}", file=err)
        return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
