"""Each screen, headless under textual's pilot, against a recording fake call: what it shows
for a given state, and what each key asks of the call."""

from __future__ import annotations

import asyncio
from typing import Any

from voice.call.events import EndReason, HoldState, Outcome, Role, State
from voice.crypto.contacts import TrustState
from voice.crypto.sas import Sas
from voice.media.receiver import PlayoutCounters
from voice.phone.history import CallRecord
from voice.ui import view
from voice.ui.meter import Levels
from voice.ui.screens import CallScreen, EndScreen, HomeLook, HomeScreen, IncomingScreen

from .fakes import FakeCall, Host, contact, screen_text, stats

SIZE = (100, 34)
TICK = 0.35  # a little more than one refresh of the screens


def connected_call(seconds: float = 75.0) -> FakeCall:
    call = FakeCall()
    call.sas = Sas(0x5A17C3)
    call.stats = stats(path="host (udp)", rtt_seconds=0.021, remote_fraction_lost=0.0,
                       interarrival_jitter_ms=2.2, encoder_bitrate=32_000)  # fmt: skip
    call.timings.connected_at = asyncio.get_running_loop().time() - seconds
    return call


async def test_the_call_screen_shows_sas_trust_timer_levels_and_network() -> None:
    call = connected_call()
    levels = Levels(input_dbfs=-18.0, output_dbfs=-30.0)
    host = Host(CallScreen(call, contact(calls=2), levels, duration=None))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(host)
        assert call.sas is not None and view.sas_words_line(call.sas) in text
        assert "Read the words to bob" in text
        assert "UNVERIFIED: compare the security code to verify" in text
        assert "2 earlier calls with this key" in text
        assert "Connected: audio is end-to-end encrypted" in text
        assert "01:15" in text
        assert "you  " + view.level_bar(-18.0) in text
        assert "peer " + view.level_bar(-30.0) in text
        assert "direct (udp) · RTT 21 ms · loss 0.0 % · jitter 2 ms · 32 kbit/s Opus" in text
        assert "SAS matches: verify" in text  # the footer offers it: the SAS is on screen


async def test_verify_is_offered_only_after_the_sas_was_shown() -> None:
    call = FakeCall()
    call.state = State.RINGING_OUT
    host = Host(CallScreen(call, None, Levels(), duration=None))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(host)
        assert "Ringing bob..." in text and "--:--" in text
        assert "NEW: not a contact you verified or called" in text
        assert "verify" not in text
        await pilot.press("v")
        assert call.log == []
        call.state, call.sas = State.CONNECTED, Sas(0x010203)
        call.timings.connected_at = asyncio.get_running_loop().time()
        await pilot.pause(TICK)
        assert "SAS matches: verify" in screen_text(host)
        await pilot.press("v")
        await pilot.pause()
        assert call.log == ["mark_verified"]
        text = screen_text(host)
        assert "VERIFIED: you compared the security code on this call" in text
        assert "SAS matches: verify" not in text  # once is enough


async def test_mute_hold_and_hang_up_keys() -> None:
    call = connected_call()
    host = Host(CallScreen(call, contact(TrustState.VERIFIED, calls=5), Levels(), duration=None))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        assert "MUTED: the peer hears silence" in screen_text(host)
        await pilot.press("m", "h")
        await pilot.pause()
        assert "On hold: you hold the call (h resumes)" in screen_text(host)
        call.hold_state = HoldState(local=True, remote=True)
        await pilot.pause(TICK)
        assert "On hold (both of you)" in screen_text(host)
        await pilot.press("h")
        call.reconnecting = True
        await pilot.pause(TICK)
        assert "Reconnecting: no audio from bob for a moment..." in screen_text(host)
        await pilot.press("q")
        await pilot.pause()
        assert call.log == ["mute(True)", "mute(False)", "hold", "resume", "hangup"]
        assert host.results == [None]  # the screen is done once the call ended


async def test_ctrl_c_hangs_up_and_duration_hangs_up_by_itself() -> None:
    call = connected_call()
    host = Host(CallScreen(call, None, Levels(), duration=None))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert call.log == ["hangup"]
    timed = connected_call(seconds=0.0)
    host = Host(CallScreen(timed, None, Levels(), duration=2.0))  # margin for a loaded start-up
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert timed.log == []
        await pilot.pause(2.5)
        assert timed.log == ["hangup"]


async def test_a_continuity_warning_is_shown() -> None:
    call = connected_call()
    call.continuity_warning = "bob's phone did not prove the secret of your last call"
    host = Host(CallScreen(call, contact(calls=3), Levels(), duration=None))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "WARNING: bob's phone did not prove" in screen_text(host)


async def test_the_incoming_screen_says_who_and_takes_the_answer() -> None:
    for key, answer in (("a", True), ("d", False)):
        call = FakeCall(role=Role.CALLEE)
        call.state = State.RINGING_IN
        host = Host(IncomingScreen(call, contact(TrustState.VERIFIED, calls=4)))
        async with host.run_test(size=SIZE) as pilot:
            await pilot.pause()
            text = screen_text(host)
            assert "Incoming call from bob" in text
            assert "VERIFIED: you compared the security code or the fingerprint" in text
            assert "4 earlier calls with this key" in text
            assert "a Accept" in text and "d Decline" in text
            await pilot.press(key)
            await pilot.pause()
            assert host.results == [answer]


async def test_the_incoming_screen_goes_when_the_caller_gives_up() -> None:
    call = FakeCall(role=Role.CALLEE)
    call.state = State.RINGING_IN
    host = Host(IncomingScreen(call, contact(TrustState.CHANGED, calls=1)))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "CHANGED: another key was also presented" in screen_text(host)
        call.state = State.ENDED
        await pilot.pause(TICK)
        assert host.results == [None]


async def test_the_end_screen() -> None:
    summary = view.end_summary(
        Outcome(EndReason.HANGUP_REMOTE), "bob", connected_at=0.0, ended_at=62.0,
        stats=stats(playout=PlayoutCounters(played=3000), started_at=0.0, path="relay (udp)"),
    )  # fmt: skip
    for key, home in (("enter", True), ("q", False)):
        host = Host(EndScreen("bob", summary))
        async with host.run_test(size=SIZE) as pilot:
            await pilot.pause()
            text = screen_text(host)
            assert "Call with bob ended" in text
            assert "Call ended: bob hung up." in text
            assert "Duration: 01:02" in text
            assert "Audio received: 60.0 s" in text
            assert "Last measured: relay (udp)" in text
            await pilot.press(key)
            await pilot.pause()
            assert host.results == [home]


async def test_home_shows_who_you_are_the_link_contacts_and_recent_calls() -> None:
    fingerprint = contact().fingerprint.human
    now = 1_800_000_000.0  # a fixed wall time; the rows are in the machine's time zone
    recent = [
        CallRecord("ws://127.0.0.1:8765", "carol", "in", now - 60, "missed"),
        CallRecord("ws://127.0.0.1:8765", "bob", "out", now - 3 * 86_400, "answered", 83.0),
    ]
    shown: dict[str, Any] = {
        "link": view.link_line("ws://127.0.0.1:8765", True),
        "contacts": [contact(TrustState.VERIFIED, calls=3), contact(user="carol")],
        "recent": recent,
    }

    def look() -> HomeLook:
        return HomeLook(shown["link"], shown["contacts"], shown["recent"])

    host = Host(HomeScreen("alice", fingerprint, look, clock=lambda: now))
    async with host.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(host)
        assert "You are alice" in text and fingerprint in text
        assert "ws://127.0.0.1:8765: online" in text
        assert "bob              VERIFIED   3 calls" in text
        assert "carol            UNVERIFIED 0 calls" in text
        assert "Recent calls (1 missed):" in text
        assert view.call_row(recent[0], now) in text and "MISSED" in text
        assert view.call_row(recent[1], now) in text and "01:23" in text
        shown["link"] = view.link_line("ws://127.0.0.1:8765", False, "connection reset")
        shown["recent"] = []
        await pilot.pause(0.6)
        text = screen_text(host)
        assert "OFFLINE (connection reset, reconnecting)" in text
        assert "Recent calls: none yet" in text and "MISSED" not in text
        await pilot.press("down", "enter")
        await pilot.pause()
        assert host.selected == ["carol"]
