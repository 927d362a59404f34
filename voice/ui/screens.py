"""The four screens: home, incoming call, in call, end. Layout and keys only.

Each screen reads its call (anything shaped like :class:`CallLike`: the real
:class:`voice.phone.Call`, or a test's fake) a few times a second and shows what
:mod:`voice.ui.view` makes of it. A screen that is done dismisses itself with its answer;
:class:`voice.ui.app.VoiceApp` decides what comes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, ClassVar, Protocol

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, ListItem, ListView, Static

from voice.audio.devicelist import DeviceKind
from voice.call.events import HoldState, Outcome, Role, State
from voice.crypto.contacts import Contact
from voice.crypto.continuity import ContinuityResult
from voice.crypto.sas import Sas
from voice.errors import CallControlError, CallEnded, VoiceError
from voice.media.stats import MediaStats
from voice.phone.call import CallTimings
from voice.phone.history import CallRecord
from voice.ui import view
from voice.ui.meter import Levels

__all__ = [
    "CallLike",
    "CallScreen",
    "EndScreen",
    "HomeLook",
    "HomeScreen",
    "IncomingScreen",
]

REFRESH = 0.25  # seconds between looks at the call
HOME_REFRESH = 0.5  # seconds between looks at the link and the contact book


class DeviceKeys(Protocol):
    """What the call screen uses to switch devices (voice.ui.devices.CallDevices)."""

    def name(self, kind: DeviceKind) -> str | None: ...
    async def switch_to_next(self, kind: DeviceKind) -> str: ...


class CallLike(Protocol):
    """What the screens use of a call (voice.phone.Call)."""

    @property
    def peer(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def state(self) -> State: ...
    @property
    def sas(self) -> Sas | None: ...
    @property
    def verified(self) -> bool: ...
    @property
    def reconnecting(self) -> bool: ...
    @property
    def muted(self) -> bool: ...
    @property
    def hold_state(self) -> HoldState: ...
    @property
    def timings(self) -> CallTimings: ...
    @property
    def continuity(self) -> ContinuityResult | None: ...
    @property
    def continuity_warning(self) -> str | None: ...
    @property
    def outcome(self) -> Outcome | None: ...
    def media_stats(self) -> MediaStats | None: ...
    def mute(self, muted: bool = True) -> None: ...
    def mark_verified(self) -> None: ...
    async def hold(self) -> None: ...
    async def resume(self) -> None: ...
    async def hangup(self) -> None: ...


def _text(text: str = "", *, id: str, classes: str | None = None) -> Static:
    """A line of plain text: names, keys and error messages are never read as markup."""
    return Static(text, id=id, classes=classes, markup=False)


def _set(screen: Screen[Any], selector: str, text: str) -> None:
    screen.query_one(selector, Static).update(text)


@dataclass(frozen=True)
class HomeLook:
    """What home shows, as it is now: the link line, the contacts, the recent calls (newest
    first)."""

    link: str
    contacts: list[Contact]
    recent: list[CallRecord] = field(default_factory=list)


class HomeScreen(Screen[None]):
    """Who you are, whether you can be reached, your contacts (Enter calls one) and your
    recent and missed calls."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "app.quit", "Quit"),
        Binding("ctrl+c", "app.quit", show=False),
    ]

    def __init__(
        self,
        user: str,
        fingerprint: str,
        look: Callable[[], HomeLook],
        clock: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
    ) -> None:
        super().__init__()
        self._tz = tz  # None: the local time zone
        self._user = user
        self._fingerprint = fingerprint
        self._look = look
        self._clock = clock  # wall time: "today" in the recent calls
        self._rows: list[tuple[str, str]] | None = None  # none shown yet

    def compose(self) -> ComposeResult:
        with Vertical(id="home"):
            yield _text(f"You are {self._user}", id="me")
            yield _text(f"Fingerprint: {self._fingerprint}", id="fingerprint")
            yield _text("", id="link")
            yield _text("Contacts (Enter calls):", id="heading", classes="heading")
            yield ListView(id="contacts")
            yield _text("", id="empty")
            yield _text("", id="recent-heading", classes="heading")
            yield _text("", id="recent")
        yield Footer()

    async def on_mount(self) -> None:
        await self.refresh_view()
        self.set_interval(HOME_REFRESH, self.refresh_view)

    async def on_screen_resume(self) -> None:
        """Back from a call: show it at once, not at the next look."""
        await self.refresh_view()

    async def refresh_view(self) -> None:
        """The link line, the recent calls, and the list (rebuilt only when a row changed: the
        cursor stays)."""
        look = self._look()
        _set(self, "#link", look.link)
        _set(self, "#recent-heading", view.recent_heading(look.recent))
        now = self._clock()
        _set(self, "#recent", "\n".join(view.call_row(r, now, self._tz) for r in look.recent))
        rows = [(c.user, view.contact_row(c)) for c in look.contacts]
        if rows == self._rows:
            return
        self._rows = rows
        listing = self.query_one("#contacts", ListView)
        cursor = listing.index or 0
        await listing.clear()
        await listing.extend(ListItem(Label(row, markup=False), name=user) for user, row in rows)
        listing.index = min(cursor, len(rows) - 1) if rows else None
        empty = self.query_one("#empty", Static)
        empty.update("No contacts yet: a contact is pinned the first time you call each other.")
        empty.display = not rows


class IncomingScreen(Screen[bool | None]):
    """A ringing call: who, how much we trust them; a accepts, d declines. Dismissed with
    True/False for the user's answer, None if the caller gave up first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "answer(True)", "Accept"),
        Binding("d", "answer(False)", "Decline"),
        Binding("ctrl+c", "answer(False)", "Decline", show=False, priority=True),
    ]

    def __init__(self, call: CallLike, contact: Contact | None) -> None:
        super().__init__()
        self.call = call
        self.contact = contact

    def compose(self) -> ComposeResult:
        badge = view.trust_badge(self.contact)
        with Vertical(id="incoming"):
            yield _text(f"Incoming call from {self.call.peer}", id="caller")
            yield _text(f"{badge.label}: {badge.detail}", id="badge", classes=badge.tone)
            yield _text(view.continuity_line(self.contact), id="continuity")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(REFRESH, self._check)

    def _check(self) -> None:
        if self.call.state.terminal and self.is_current:
            self.dismiss(None)

    def action_answer(self, accept: bool) -> None:
        if self.is_current:
            self.dismiss(accept)


class CallScreen(Screen[None]):
    """The call: SAS, trust, timer, mute, hold, levels, network. Dismissed once it ended."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "mute", "Mute"),
        Binding("h", "hold", "Hold"),
        Binding("v", "verify", "SAS matches: verify"),
        Binding("i", "device('input')", "Input"),
        Binding("o", "device('output')", "Output"),
        Binding("q", "hangup", "Hang up"),
        Binding("ctrl+c", "hangup", "Hang up", show=False, priority=True),
    ]

    def __init__(
        self,
        call: CallLike,
        contact: Contact | None,
        levels: Levels,
        *,
        duration: float | None,
        devices: DeviceKeys | None = None,
    ) -> None:
        super().__init__()
        self.call = call
        self.devices = devices  # the call's microphone and speaker, when they are devices
        self.contact = contact  # as the call began: the badge and the count of earlier calls
        self.levels = levels
        self.duration = duration  # --duration: hang up this long after connecting
        self.sas_shown = False

    def compose(self) -> ComposeResult:
        with Vertical(id="call"):
            yield _text(self.call.peer, id="peer")
            yield _text("", id="badge")
            yield _text(view.continuity_line(self.contact), id="continuity")
            yield _text("", id="warning", classes="bad")
            with Vertical(id="sas-box"):
                yield _text("Security code: shown once the call connects", id="sas-words")
                yield _text("", id="sas-emoji")
                yield _text("", id="sas-help")
            yield _text("", id="status")
            yield _text("", id="timer")
            yield _text("", id="mute")
            yield _text("", id="level-in")
            yield _text("", id="level-out")
            yield _text("", id="devices")
            yield _text("", id="network")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(REFRESH, self.refresh_view)

    def refresh_view(self) -> None:
        call = self.call
        if call.state.terminal:
            if self.is_current:
                self.dismiss(None)
            return
        if call.sas is not None and not self.sas_shown:
            _set(self, "#sas-words", view.sas_words_line(call.sas))
            _set(self, "#sas-emoji", view.sas_emoji_line(call.sas))
            _set(self, "#sas-help", f"Read the words to {call.peer}: if {call.peer} sees the "
                                    "same, nobody is in the middle. v: they match.")  # fmt: skip
            self.sas_shown = True  # only now may the user verify: there is something to compare
            self.refresh_bindings()
        badge = view.trust_badge(self.contact, verified_now=call.verified)
        _set(self, "#badge", f"{badge.label}: {badge.detail}")
        self.query_one("#badge", Static).set_classes(badge.tone)
        warning = call.continuity_warning
        _set(self, "#warning", f"WARNING: {warning}" if warning else "")
        self.query_one("#warning", Static).display = bool(warning)
        if call.continuity is ContinuityResult.MATCH:
            _set(self, "#continuity", view.continuity_line(self.contact, call.continuity))
        _set(self, "#status", view.status_line(call.state, role=call.role, peer=call.peer,
             reconnecting=call.reconnecting, hold=call.hold_state))  # fmt: skip
        _set(self, "#timer", f"Time {view.timer_text(self._elapsed())}")
        _set(self, "#mute", view.mute_text(call.muted))
        _set(self, "#level-in", "you  " + view.level_bar(self.levels.input_dbfs))
        _set(self, "#level-out", "peer " + view.level_bar(self.levels.output_dbfs))
        names = self._device_names()
        _set(self, "#devices", view.devices_line(*names))
        self.query_one("#devices", Static).display = names != (None, None)
        _set(self, "#network", view.network_line(call.media_stats()))
        elapsed = self._elapsed()
        if self.duration is not None and elapsed is not None and elapsed >= self.duration:
            self.duration = None
            self.run_worker(self.action_hangup())

    def _elapsed(self) -> float | None:
        connected_at = self.call.timings.connected_at
        if connected_at is None:
            return None
        return asyncio.get_running_loop().time() - connected_at

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Verify is offered only after the SAS was on screen, and only once."""
        if action == "verify":
            return self.sas_shown and not self.call.verified
        if action == "device":
            kind = parameters[0] if parameters else None
            return (
                kind in ("input", "output") and self._device_names()[kind == "output"] is not None
            )
        return True

    def _device_names(self) -> tuple[str | None, str | None]:
        if self.devices is None:
            return None, None
        return self.devices.name("input"), self.devices.name("output")

    async def action_device(self, kind: DeviceKind) -> None:
        """Move the microphone (input) or the speaker (output) to the next device."""
        if self.devices is None:
            return
        try:
            name = await self.devices.switch_to_next(kind)
        except (LookupError, VoiceError, OSError) as exc:  # OSError: PortAudio itself
            self.notify(f"Cannot switch the {kind}: {exc}", severity="warning", markup=False)
            return
        self.notify(f"{'Microphone' if kind == 'input' else 'Speaker'}: {name}", markup=False)
        self.refresh_view()

    def action_mute(self) -> None:
        try:
            self.call.mute(not self.call.muted)
        except CallEnded:
            return
        self.refresh_view()

    async def action_hold(self) -> None:
        try:
            if self.call.hold_state.local:
                await self.call.resume()
            else:
                await self.call.hold()
        except (CallControlError, CallEnded) as exc:
            self.notify(str(exc), severity="warning", markup=False)
        self.refresh_view()

    def action_verify(self) -> None:
        if not self.sas_shown:  # never reached through the keys (check_action), kept for safety
            return
        try:
            self.call.mark_verified()
        except CallControlError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.notify(f"{self.call.peer} marked verified.")
        self.refresh_bindings()
        self.refresh_view()

    async def action_hangup(self) -> None:
        with contextlib.suppress(CallEnded):  # it ended meanwhile: nothing to hang up
            await self.call.hangup()
        self.refresh_view()


class EndScreen(Screen[bool]):
    """How the call went. Enter goes home (dismissed with True), q quits (False)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "close(True)", "Home"),
        Binding("escape", "close(True)", show=False),
        Binding("q", "close(False)", "Quit"),
        Binding("ctrl+c", "close(False)", show=False, priority=True),
    ]

    def __init__(self, peer: str, summary: view.EndSummary) -> None:
        super().__init__()
        self.peer = peer
        self.summary = summary

    def compose(self) -> ComposeResult:
        s = self.summary
        with Vertical(id="end"):
            yield _text(f"Call with {self.peer} ended", id="title")
            yield _text(s.reason, id="reason", classes="bad" if s.failed else "plain")
            yield _text(f"Duration: {s.duration}", id="duration")
            yield _text("\n".join(s.quality), id="quality")
        yield Footer()

    def action_close(self, home: bool) -> None:
        if self.is_current:
            self.dismiss(home)
