"""``voice ui``: log in as ``voice call`` and ``voice listen`` do, then run the call screen.

The phone is configured as :meth:`voice.cli.calls.Session.open` configures it (server pins, the
replay journal, the relay policy), but with :class:`voice.ui.meter.CallAudio` as its audio, so
every call of the run gets a fresh, metered source and sink. Nothing is printed while the
screen runs: a logged warning becomes a notification on the screen (a line written to the
terminal would tear the screen), the end reason becomes the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from voice.cli.context import Settings, check_username
from voice.cli.login import phone_config, remember_login
from voice.cli.options import CallOptions
from voice.crypto.contacts import ContactBook
from voice.exitcodes import ExitCode
from voice.phone import Phone
from voice.ui.meter import CallAudio

if TYPE_CHECKING:
    from textual.app import App

__all__ = ["open_phone", "run_ui"]


async def open_phone(
    settings: Settings, options: CallOptions, contacts: ContactBook, audio: CallAudio
) -> tuple[Phone, list[str]]:
    """A logged-in phone, and the warnings to show once the screen is up."""
    phone = await Phone.connect(phone_config(settings, options, contacts), audio=audio)
    try:
        warning = remember_login(settings, phone)
    except BaseException:
        await phone.close()
        raise
    return phone, [warning] if warning is not None else []


async def run_ui(settings: Settings, options: CallOptions, peer: str | None = None) -> ExitCode:
    """Log in, run the screen until the user quits; the exit code of the last call (OK if
    none ended). With ``peer``, call them at once."""
    from voice.ui.app import VoiceApp  # loads textual: only for the screen

    if peer is not None:
        check_username(peer)
    contacts = settings.contacts()
    audio = CallAudio(options.audio)
    await audio.refill()  # a missing device or WAV file fails before logging in
    try:
        phone, warnings = await open_phone(settings, options, contacts, audio)
        try:
            app = VoiceApp(
                phone,
                contacts,
                audio,
                server=settings.server,
                call_to=peer,
                warnings=warnings,
                duration=options.duration,
            )
            with _log_to_screen(app):
                result = await app.run_async()
        finally:
            await phone.close()
    finally:
        await audio.close()
    return result if result is not None else ExitCode.OK


class _ToScreen(logging.Handler):
    """Warnings and errors as notifications (from any thread: through the loop)."""

    def __init__(self, app: App[Any], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self._app = app
        self._loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        text, error = record.getMessage(), record.levelno >= logging.ERROR
        with contextlib.suppress(RuntimeError):  # the loop closed: the screen is gone
            self._loop.call_soon_threadsafe(
                lambda: self._app.notify(
                    text, severity="error" if error else "warning", markup=False
                )
            )


@contextlib.contextmanager
def _log_to_screen(app: App[Any]) -> Iterator[None]:
    """While the screen runs, the root logger's terminal handlers give way to notifications."""
    root = logging.getLogger()
    terminal = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]  # fmt: skip
    screen = _ToScreen(app, asyncio.get_running_loop())
    for handler in terminal:
        root.removeHandler(handler)
    root.addHandler(screen)
    try:
        yield
    finally:
        root.removeHandler(screen)
        for handler in terminal:
            root.addHandler(handler)
