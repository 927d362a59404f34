"""The call screen's application: one logged-in phone, the screens, and what leads from one to
the next.

Home stays at the bottom of the stack. A ringing call pushes the incoming screen; accepting it
(or calling a contact from home, or ``voice ui USER``) pushes the call screen; a call that ended
pushes the end screen, and Enter there goes home again. The phone's news (online or not, a
missed call, a caller refused for a changed key) reaches the user as notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

from textual.app import App
from textual.widgets import ListView

from voice.crypto.contacts import Contact, ContactBook
from voice.errors import CallEnded, KeyChangedError, PhoneClosed, VoiceError
from voice.exitcodes import ExitCode, for_exception, for_reason
from voice.phone import Call, Phone
from voice.phone.history import CallRecord
from voice.ui import view
from voice.ui.devices import CallDevices
from voice.ui.meter import CallAudio
from voice.ui.screens import CallScreen, EndScreen, HomeLook, HomeScreen, IncomingScreen

__all__ = ["VoiceApp"]

RECENT_CALLS = 6  # lines of recent calls on home


class VoiceApp(App[ExitCode]):
    """The terminal phone: run it with ``run_async()`` (or ``run_test()``); it returns the exit
    code of the last call that ended (None if none did)."""

    TITLE = "voice"
    ENABLE_COMMAND_PALETTE = False  # every action has its key on the footer
    CSS: ClassVar[str] = """
    #home, #incoming, #call, #end { padding: 1 2; }
    #peer, #caller, #title { text-style: bold; }
    #sas-box { border: heavy $accent; padding: 0 2; height: auto; margin: 1 0; }
    #sas-words { text-style: bold; color: $accent; }
    #contacts { height: auto; max-height: 12; border: round $primary; }
    .good { color: $success; text-style: bold; }
    .warn { color: $warning; text-style: bold; }
    .bad { color: $error; text-style: bold; }
    .heading { margin-top: 1; }
    """

    def __init__(
        self,
        phone: Phone,
        contacts: ContactBook,
        audio: CallAudio,
        *,
        server: str,
        call_to: str | None = None,
        warnings: list[str] | None = None,
        duration: float | None = None,
    ) -> None:
        super().__init__()
        self.phone = phone
        self.contacts = contacts
        self.audio = audio
        self.server = server
        self.call_to = call_to
        self.duration = duration
        self.last_code: ExitCode | None = None
        self.calls: list[Call] = []  # every call this run, oldest first
        self._warnings = warnings or []
        self._home = HomeScreen(phone.user, phone.config.identity.fingerprint.human, self._look)

    # ---- start and the phone's news --------------------------------------------------------
    def on_mount(self) -> None:
        self.push_screen(self._home)
        self.run_worker(self._take_calls(), group="phone")
        self.run_worker(self._show_news(), group="phone")
        for warning in self._warnings:
            self.notify(warning, severity="warning", markup=False)
        if self.call_to is not None:
            self.run_worker(self.place_call(self.call_to))

    def _look(self) -> HomeLook:
        """What home shows: the link line, the contacts and the recent calls."""
        changes = self.phone.link_changes
        reason = changes[-1].reason if changes and not changes[-1].online else None
        lost = self.phone.signaling_lost
        if lost is not None:
            link = view.link_line(self.server, False, str(lost), reconnecting=False)
        else:
            link = view.link_line(self.server, self.phone.online, reason)
        return HomeLook(link, self.contacts.all(), self._recent())

    def _recent(self) -> list[CallRecord]:
        log = self.phone.config.call_log
        if log is None:
            return []
        try:
            return log.recent(RECENT_CALLS)
        except (OSError, VoiceError):  # an unreadable log costs the list, not the phone
            return []

    async def action_quit(self) -> None:
        """Quit with the last call's exit code (a call in progress is hung up on close)."""
        self.exit(self.last_code)

    async def _take_calls(self) -> None:
        while True:
            try:
                call = await self.phone.incoming()
            except PhoneClosed:
                lost = self.phone.signaling_lost
                text = f"Offline for good: {lost or 'the phone closed'}"
                self.notify(text, severity="error", markup=False)
                return
            self.calls.append(call)
            self._show_call(call, self.contacts.get(call.peer))

    async def _show_news(self) -> None:
        missed = asyncio.ensure_future(self.phone.next_missed())
        warned = asyncio.ensure_future(self.phone.next_warning())
        try:
            while True:
                await asyncio.wait([missed, warned], return_when=asyncio.FIRST_COMPLETED)
                if missed.done():
                    self.notify(f"Missed call from {missed.result().peer}.", markup=False)
                    missed = asyncio.ensure_future(self.phone.next_missed())
                if warned.done():
                    user = warned.result().user
                    text = (
                        f"Refused a call from {user}: another identity key. See 'voice contacts'."
                    )
                    self.notify(text, severity="error", markup=False)
                    warned = asyncio.ensure_future(self.phone.next_warning())
        finally:
            missed.cancel()
            warned.cancel()

    # ---- calls -------------------------------------------------------------------------------
    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if event.item.name:
            self.run_worker(self.place_call(event.item.name))

    async def place_call(self, user: str) -> Call | None:
        """Dial ``user`` and show the call; a refusal is a notification, not an error."""
        contact = self.contacts.get(user)  # before the call pins anything: "new" stays new
        try:
            call = await self.phone.call(user)
        except KeyChangedError:
            self.last_code = ExitCode.KEY_CHANGED
            text = f"{user}'s identity key changed: nothing was sent. See 'voice contacts'."
            self.notify(text, severity="error", markup=False)
            return None
        except (VoiceError, TimeoutError, OSError) as exc:
            self.last_code = for_exception(exc) or ExitCode.CALL_FAILED  # as line mode exits
            self.notify(f"Cannot call {user}: {exc}", severity="error", markup=False)
            return None
        self.calls.append(call)
        self._show_call(call, contact)
        return call

    def _show_call(self, call: Call, contact: Contact | None) -> None:
        """The screen for the call's state now; each screen, once done, comes back here."""
        name = view.screen_for(call.state, call.role)
        if name == "incoming":

            async def answered(accept: bool | None) -> None:
                try:
                    if accept:
                        await call.accept()
                    elif accept is False:
                        await call.decline()
                except CallEnded:
                    pass
                self._show_call(call, contact)

            self.push_screen(IncomingScreen(call, contact), answered)
        elif name == "in_call":
            screen = CallScreen(call, contact, self.audio.levels, duration=self.duration,
                                devices=CallDevices(lambda: self.audio.current))  # fmt: skip
            self.push_screen(screen, lambda _: self._show_call(call, contact))
        else:
            self.run_worker(self._show_end(call))

    async def _show_end(self, call: Call) -> None:
        outcome = await call.wait_ended()
        self.last_code = for_reason(outcome.reason)
        timings = call.timings
        summary = view.end_summary(
            outcome,
            call.peer,
            connected_at=timings.connected_at,
            ended_at=timings.ended_at,
            stats=call.media_stats(),
        )

        def closed(home: bool | None) -> None:
            if not home:
                self.exit(self.last_code)

        self.push_screen(EndScreen(call.peer, summary), closed)
        with contextlib.suppress(VoiceError, OSError):
            await self.audio.refill()  # the next call's source and sink
