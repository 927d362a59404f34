"""End to end: the call screen of a real phone (alice) against a plain phone (bob), through a
real signaling server, with real media (tones). The test presses alice's keys and checks what
her screen shows and what bob's call sees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import textual.app

from voice.audio.base import AudioSink, AudioSource
from voice.audio.sinks import NullSink
from voice.audio.sources import ToneSource
from voice.call.events import EndReason, HoldState
from voice.crypto.contacts import TrustState
from voice.exitcodes import ExitCode
from voice.phone import Phone
from voice.ui import view
from voice.ui.app import VoiceApp
from voice.ui.meter import CallAudio
from voice.ui.screens import CallScreen, EndScreen, HomeScreen, IncomingScreen

from ...adversarial.phones import Person, phone
from ..cli_harness import signaling_server
from .fakes import screen_text

SIZE = (100, 34)


class Tones:
    async def build(self) -> tuple[AudioSource, AudioSink]:
        return ToneSource(440.0), NullSink()


async def until(check: Callable[[], bool], pilot: object, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not check():
            await pilot.pause(0.05)  # type: ignore[attr-defined]


def rendered(app: VoiceApp) -> bool:
    """The current screen has drawn something (a screen switch renders a moment later)."""
    return bool(screen_text(app).strip())


async def _short_idle_wait(*_: object, **__: object) -> None:
    await asyncio.sleep(0.01)


async def test_alice_calls_bob_mutes_holds_verifies_hangs_up_then_takes_his_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pilot waits after each key until the process idles (or 1 s), twice; with two phones
    # encoding and decoding audio in this process it never idles: every key would take 2 s.
    monkeypatch.setattr(textual.app, "wait_for_idle", _short_idle_wait)
    alice, bob = Person.make("alice", tmp_path), Person.make("bob", tmp_path)
    alice.contacts.check("bob", bob.identity.public_key)  # in her list before any call
    async with signaling_server() as url, phone(bob, url) as bob_phone:
        audio = CallAudio(Tones())
        await audio.refill()
        alice_phone = await Phone.connect(alice.config(url), audio=audio)
        app = VoiceApp(alice_phone, alice.contacts, audio, server=url)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await until(lambda: isinstance(app.screen, HomeScreen) and rendered(app), pilot)
                await until(lambda: "online" in screen_text(app), pilot)
                home = screen_text(app)
                assert alice.identity.fingerprint.human in home
                assert "bob              UNVERIFIED 0 calls" in home

                await pilot.press("enter")  # call bob, the contact under the cursor
                incoming = await bob_phone.incoming(timeout=10)
                await until(lambda: isinstance(app.screen, CallScreen) and rendered(app), pilot)
                await incoming.accept()
                await incoming.wait_connected(timeout=10)
                assert incoming.sas is not None
                words = view.sas_words_line(incoming.sas)
                await until(lambda: words in screen_text(app), pilot)  # the same SAS
                ours = app.calls[0]
                await until(lambda: "you  ░" not in screen_text(app), pilot)  # the tone's level
                assert "Connected: audio is end-to-end encrypted" in screen_text(app)
                assert "Opus" in screen_text(app)

                await pilot.press("m")
                assert ours.muted and "MUTED" in screen_text(app)
                await pilot.press("m")
                assert not app.calls[0].muted

                await pilot.press("h")
                assert await asyncio.wait_for(incoming.next_hold_change(), 5) == HoldState(
                    remote=True
                )
                await until(lambda: "On hold: you hold the call" in screen_text(app), pilot)
                await pilot.press("h")
                assert await asyncio.wait_for(incoming.next_hold_change(), 5) == HoldState()
                await incoming.hold()
                await until(lambda: "On hold: bob holds the call" in screen_text(app), pilot)
                await incoming.resume()

                await pilot.press("v")
                got = alice.contacts.get("bob")
                assert got is not None and got.state is TrustState.VERIFIED
                await until(lambda: "VERIFIED: you compared" in screen_text(app), pilot)

                await pilot.press("q")
                assert (await incoming.wait_ended(timeout=10)).reason is EndReason.HANGUP_REMOTE
                await until(lambda: isinstance(app.screen, EndScreen) and rendered(app), pilot)
                end = screen_text(app)
                assert "Call ended: you hung up." in end and "Duration: 00:0" in end  # seconds
                assert "Audio received:" in end

                await pilot.press("enter")
                await until(lambda: "bob              VERIFIED   1 call" in screen_text(app), pilot)

                back = await bob_phone.call("alice")  # now bob calls her
                await until(lambda: isinstance(app.screen, IncomingScreen) and rendered(app), pilot)
                ringing = screen_text(app)
                assert "Incoming call from bob" in ringing
                assert "VERIFIED" in ringing and "1 earlier call with this key" in ringing
                await pilot.press("a")
                await back.wait_connected(timeout=10)
                await until(lambda: isinstance(app.screen, CallScreen) and rendered(app), pilot)
                await back.hangup()
                await until(lambda: isinstance(app.screen, EndScreen) and rendered(app), pilot)
                assert "Call ended: bob hung up." in screen_text(app)
                await pilot.press("q")
            assert app.return_value is not None and app.return_value.name == "OK"
        finally:
            await alice_phone.close()
            await audio.close()


async def test_a_call_that_cannot_be_placed_exits_with_its_code_as_line_mode_does(
    tmp_path: Path,
) -> None:
    alice = Person.make("alice", tmp_path)
    async with signaling_server() as url:
        audio = CallAudio(Tones())
        await audio.refill()
        alice_phone = await Phone.connect(alice.config(url), audio=audio)
        app = VoiceApp(alice_phone, alice.contacts, audio, server=url, call_to="nosuchuser")
        try:
            async with app.run_test(size=SIZE) as pilot:
                await until(lambda: app.last_code is not None, pilot)
                notes = [n.message for n in app._notifications]
                assert any(n.startswith("Cannot call nosuchuser") for n in notes), notes
                assert isinstance(app.screen, HomeScreen)  # back home, nothing to hang up
                await pilot.press("q")
            assert app.return_value == ExitCode.UNKNOWN_USER
        finally:
            await alice_phone.close()
            await audio.close()
