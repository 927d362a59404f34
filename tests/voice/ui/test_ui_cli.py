"""`voice ui` takes the audio options of call and listen, and an optional user to call; `call`
and `listen` open the screen by themselves in a terminal, unless asked for lines."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from voice.cli import build_parser, main, wants_screen
from voice.cli.context import Settings, resolve_settings
from voice.cli.options import CallOptions
from voice.exitcodes import ExitCode
from voice.ui.shell import _log_to_screen


def test_voice_ui_parses_like_call_with_an_optional_peer() -> None:
    args = build_parser().parse_args(["ui", "bob", "--tone", "440", "--no-output"])
    assert (args.command, args.peer) == ("ui", "bob")
    options = CallOptions.from_args(args)
    assert options.audio.tone == 440.0 and options.audio.mute_output
    assert build_parser().parse_args(["ui"]).peer is None


class Notes:
    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []

    def notify(self, text: str, *, severity: str, markup: bool) -> None:
        assert markup is False
        self.notes.append((severity, text))


async def test_while_the_screen_runs_warnings_become_notifications() -> None:
    import asyncio

    root = logging.getLogger()
    terminal = logging.StreamHandler()
    root.addHandler(terminal)
    app = Notes()
    try:
        with _log_to_screen(app):  # type: ignore[arg-type]
            assert terminal not in root.handlers
            logging.getLogger("voice.phone").warning("no TURN relay offered: going direct")
            logging.getLogger("voice.phone").error("[Errno 111] refused")
            await asyncio.sleep(0)
        assert terminal in root.handlers
        assert app.notes == [
            ("warning", "no TURN relay offered: going direct"),
            ("error", "[Errno 111] refused"),
        ]
    finally:
        root.removeHandler(terminal)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("argv", "screen"),
    [
        (["call", "bob"], True),
        (["listen"], True),
        (["call", "bob", "--tone", "440"], True),
        (["call", "bob", "--duration", "5"], False),  # a timed call ends by itself: lines
        (["call", "bob", "--plain"], False),
        (["listen", "--plain"], False),
        (["call", "bob", "--no-prompt"], False),  # a script's options: line mode
        (["listen", "--auto-answer"], False),
        (["listen", "--timeout", "30"], False),
        (["contacts"], False),
    ],
)
def test_call_and_listen_open_the_screen_in_a_terminal_unless_plain(
    argv: list[str], screen: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    args = build_parser().parse_args(argv)

    def settings(out: io.StringIO) -> Settings:
        return resolve_settings(config_dir=str(tmp_path), server=None, user=None, out=out)

    in_terminal, piped = settings(Terminal()), settings(io.StringIO())
    monkeypatch.setattr("sys.stdin", Terminal())
    assert wants_screen(args, in_terminal) is screen
    assert wants_screen(args, piped) is False  # output to a pipe or file: always lines
    monkeypatch.setattr("sys.stdin", io.StringIO())
    assert wants_screen(args, in_terminal) is False  # answers from a pipe: always lines


def test_voice_without_a_command_is_a_usage_error_outside_a_terminal(tmp_path: Path) -> None:
    err = io.StringIO()
    code = main(["--config-dir", str(tmp_path)], out=io.StringIO(), err=err)
    assert code == ExitCode.USAGE
    assert "a command is needed when not in a terminal" in err.getvalue()
