"""Text captures of each screen in a fixed state: the ones in docs/ui.md.

``python -m tests.voice.ui.captures`` prints them; test_ui_docs checks the document shows
each one as the screens render it now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from textual.screen import Screen

from voice.call.events import EndReason, Outcome, Role, State
from voice.crypto.contacts import KeySource, TrustState
from voice.crypto.sas import Sas
from voice.media.jitter import JitterStats
from voice.media.receiver import PlayoutCounters
from voice.phone.history import CallRecord
from voice.ui import view
from voice.ui.meter import Levels
from voice.ui.screens import CallScreen, EndScreen, HomeLook, HomeScreen, IncomingScreen

from .fakes import FakeCall, Host, contact, screen_text, stats

SIZE = (80, 24)
SERVER = "wss://voice.example.org:8765"


def _home() -> Screen[None]:
    book = [
        contact(TrustState.VERIFIED, calls=7),
        contact(user="carol", calls=2),
        contact(TrustState.CHANGED, user="dave", calls=1),
        contact(user="mallory", introduced=KeySource.OFFER),
    ]

    now = datetime(2026, 12, 1, 14, 30, tzinfo=UTC).timestamp()
    recent = [
        CallRecord(SERVER, "carol", "in", now - 25 * 60, "missed"),
        CallRecord(SERVER, "bob", "out", now - 3 * 3600, "answered", 83.0),
        CallRecord(SERVER, "bob", "in", now - 26 * 3600, "answered", 412.0),
    ]

    def look() -> HomeLook:
        return HomeLook(view.link_line(SERVER, True), book, recent)

    return HomeScreen("alice", contact().fingerprint.human, look, clock=lambda: now, tz=UTC)


def _incoming() -> Screen[bool | None]:
    call = FakeCall(role=Role.CALLEE)
    call.state = State.RINGING_IN
    return IncomingScreen(call, contact(calls=2))


def _in_call() -> Screen[None]:
    call = FakeCall()
    call.sas = Sas(0x5A17C3)
    call.stats = stats(path="srflx (udp)", rtt_seconds=0.048, remote_fraction_lost=0.012,
                       interarrival_jitter_ms=4.1, encoder_bitrate=32_000)  # fmt: skip
    call.timings.connected_at = asyncio.get_running_loop().time() - 83.0
    call.muted = True
    return CallScreen(call, contact(calls=2), Levels(-17.0, -26.0), duration=None)


def _end() -> Screen[bool]:
    heard = stats(
        playout=PlayoutCounters(played=4105, fec_recovered=9, concealed=14),
        jitter=JitterStats(lost=21, underruns=2, delay_ms=42.0),
        started_at=0.0, path="srflx (udp)", rtt_seconds=0.05, remote_fraction_lost=0.008,
        interarrival_jitter_ms=3.9, encoder_bitrate=32_000,
    )  # fmt: skip
    summary = view.end_summary(
        Outcome(EndReason.HANGUP_REMOTE), "bob", connected_at=0.0, ended_at=83.0, stats=heard
    )
    return EndScreen("bob", summary)


SCREENS: dict[str, Callable[[], Screen[Any]]] = {
    "Home": _home,
    "Incoming call": _incoming,
    "In call": _in_call,
    "End": _end,
}


async def capture(name: str) -> str:
    host = Host(SCREENS[name]())
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        return screen_text(host)


async def _main() -> None:
    for name in SCREENS:
        print(f"### {name}\n\n```text\n{await capture(name)}```\n")


if __name__ == "__main__":
    asyncio.run(_main())
