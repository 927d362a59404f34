"""A recording fake call, plain test values, and the screen as text for the pilot tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.app import App
from textual.screen import Screen
from textual.widgets import ListView

from voice.call.events import HoldState, Outcome, Role, State
from voice.crypto.contacts import Contact, KeySource, TrustState
from voice.crypto.continuity import ContinuityResult
from voice.crypto.identity import fingerprint_of
from voice.crypto.sas import Sas
from voice.errors import CallControlError, CallEnded
from voice.media.receiver import PlayoutCounters
from voice.media.stats import MediaStats
from voice.phone.call import CallTimings
from voice.ui.app import VoiceApp

KEY = bytes(range(32))


def contact(
    state: TrustState = TrustState.UNVERIFIED,
    *,
    user: str = "bob",
    calls: int = 0,
    introduced: KeySource = KeySource.LOOKUP,
) -> Contact:
    return Contact(user, KEY, state, fingerprint_of(KEY), introduced, calls)


def stats(**changes: Any) -> MediaStats:
    """Media counters, all zero unless ``changes`` say otherwise."""
    fields: dict[str, Any] = {f.name: 0 for f in dataclasses.fields(MediaStats)}
    fields.update(playout=PlayoutCounters(), jitter=None, srtp_packet_sizes=())
    fields.update(srtp_packet_sizes_received=(), opus_payload_sizes=(), path=None)
    fields.update(rtt_seconds=None, remote_fraction_lost=None, ice_connect_seconds=None)
    fields.update(started_at=None, first_audio_at=None, first_packet_at=None, last_rtp_at=None)
    fields.update(error=None, interarrival_jitter_ms=0.0)
    fields.update(changes)
    return MediaStats(**fields)


class FakeCall:
    """What the screens use of a call; records what the user's keys asked of it."""

    def __init__(self, peer: str = "bob", role: Role = Role.CALLER) -> None:
        self.peer = peer
        self.role = role
        self.state = State.CONNECTED
        self.sas: Sas | None = None
        self.verified = False
        self.reconnecting = False
        self.muted = False
        self.hold_state = HoldState()
        self.timings = CallTimings()
        self.continuity: ContinuityResult | None = None
        self.continuity_warning: str | None = None
        self.outcome: Outcome | None = None
        self.stats: MediaStats | None = None
        self.log: list[str] = []

    def media_stats(self) -> MediaStats | None:
        return self.stats

    def mute(self, muted: bool = True) -> None:
        self.log.append(f"mute({muted})")
        self.muted = muted

    def mark_verified(self) -> None:
        if self.sas is None:
            raise CallControlError("no SAS was shown on this call yet")
        self.log.append("mark_verified")
        self.verified = True

    async def hold(self) -> None:
        self.log.append("hold")
        self.hold_state = HoldState(local=True, remote=self.hold_state.remote)

    async def resume(self) -> None:
        self.log.append("resume")
        self.hold_state = HoldState(local=False, remote=self.hold_state.remote)

    async def hangup(self) -> None:
        if self.state.terminal:
            raise CallEnded(self.outcome)
        self.log.append("hangup")
        self.state = State.ENDED


def screen_text(app: App[Any]) -> str:
    """The current screen as the terminal would show it, as plain text (trailing spaces cut)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text.rstrip() for strip in strips).rstrip() + "\n"


class Host(App[None]):
    """Shows one screen, with the app's styles; keeps what it was dismissed with."""

    CSS = VoiceApp.CSS
    ENABLE_COMMAND_PALETTE = VoiceApp.ENABLE_COMMAND_PALETTE

    def __init__(self, screen: Screen[Any]) -> None:
        super().__init__()
        self.first = screen
        self.results: list[object] = []
        self.selected: list[str | None] = []

    def on_mount(self) -> None:
        self.push_screen(self.first, self.results.append)

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        self.selected.append(event.item.name)
