"""`voice ui` takes the audio options of call and listen, and an optional user to call."""

from __future__ import annotations

import logging

from voice.cli import build_parser
from voice.cli.options import CallOptions
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
