"""What the call screens say: trust, continuity, SAS, time, network, status, levels, the end."""

from __future__ import annotations

import math

import pytest

from voice.call.events import EndReason, FailReason, HoldState, Outcome, Role, State
from voice.cli.listen import caller_trust
from voice.cli.ui import sas_lines
from voice.crypto.contacts import Contact, KeySource, TrustState
from voice.crypto.continuity import ContinuityResult
from voice.crypto.sas import Sas
from voice.media.receiver import PlayoutCounters
from voice.ui import view

from .fakes import contact, stats


@pytest.mark.parametrize(
    ("who", "label", "line_mode"),
    [
        (None, "NEW", "new:"),
        (contact(introduced=KeySource.OFFER), "NEW", "new:"),
        (contact(introduced=KeySource.OFFER, calls=2), "UNVERIFIED", "unverified contact;"),
        (contact(), "UNVERIFIED", "unverified contact;"),
        (contact(TrustState.VERIFIED, calls=3), "VERIFIED", "verified contact;"),
        (contact(TrustState.CHANGED, calls=1), "CHANGED", "another key was also presented"),
    ],
)
def test_the_badge_says_what_the_line_mode_says(
    who: Contact | None, label: str, line_mode: str
) -> None:
    assert view.trust_badge(who).label == label
    assert caller_trust(who).startswith(line_mode)


def test_comparing_the_sas_on_this_call_makes_the_badge_verified() -> None:
    assert view.trust_badge(contact(), verified_now=True).label == "VERIFIED"
    assert view.trust_badge(None, verified_now=True).tone == "good"
    assert view.trust_badge(contact(TrustState.CHANGED)).tone == "bad"


def test_the_continuity_line_counts_earlier_calls_with_this_key() -> None:
    assert view.continuity_line(None) == "first call with this key"
    assert view.continuity_line(contact(calls=1)) == "1 earlier call with this key"
    assert view.continuity_line(contact(calls=2)) == "2 earlier calls with this key"
    assert view.continuity_line(contact(calls=4), ContinuityResult.MATCH) == (
        "4 earlier calls with this key; keys continue from the last call"
    )
    assert "continue" not in view.continuity_line(contact(calls=4), ContinuityResult.MISMATCH)


def test_the_sas_shows_the_same_words_as_the_line_mode() -> None:
    sas = Sas(0xA1B2C3)
    words = view.sas_words_line(sas)
    assert words.split() == sas_lines(sas, "bob")[0].split(": ")[1].split()
    assert words == words.upper() and len(words.split()) == 3
    emoji = view.sas_emoji_line(sas)
    for glyph, name in zip(sas.emoji, sas.emoji_names, strict=True):
        assert f"{glyph} {name}" in emoji


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "--:--"), (-1.0, "00:00"), (0.0, "00:00"), (75.9, "01:15"), (3725.0, "1:02:05")],
)
def test_the_timer(seconds: float | None, text: str) -> None:
    assert view.timer_text(seconds) == text


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("host (udp)", "direct (udp)"),
        ("srflx (udp)", "NAT (udp)"),
        ("relay (tls)", "relay (tls)"),
        (None, "path unknown"),
    ],
)
def test_the_path_in_a_users_words(path: str | None, text: str) -> None:
    assert view.path_text(path) == text


def test_the_network_line() -> None:
    assert view.network_line(None) == "network: no media yet"
    fresh = stats(path="host (udp)", encoder_bitrate=40_000)
    assert (
        view.network_line(fresh) == "direct (udp) · RTT – · loss – · jitter 0 ms · 40 kbit/s Opus"
    )
    measured = stats(
        path="relay (tcp)",
        rtt_seconds=0.0123,
        remote_fraction_lost=0.025,
        interarrival_jitter_ms=3.4,
        encoder_bitrate=32_000,
    )
    assert view.network_line(measured) == (
        "relay (tcp) · RTT 12 ms · loss 2.5 % · jitter 3 ms · 32 kbit/s Opus"
    )


@pytest.mark.parametrize(
    ("state", "role", "extra", "text"),
    [
        (State.DIALING, Role.CALLER, {}, "Calling bob..."),
        (State.RINGING_OUT, Role.CALLER, {}, "Ringing bob..."),
        (State.RINGING_IN, Role.CALLEE, {}, "bob is calling"),
        (State.CONNECTING, Role.CALLEE, {}, "Connecting: agreeing on keys..."),
        (State.CONNECTED, Role.CALLER, {}, "Connected: audio is end-to-end encrypted"),
        (State.CONNECTED, Role.CALLER, {"reconnecting": True}, "Reconnecting: no audio from bob"),
        (State.CONNECTED, Role.CALLER, {"hold": HoldState(local=True)}, "On hold: you hold"),
        (State.CONNECTED, Role.CALLER, {"hold": HoldState(remote=True)}, "On hold: bob holds"),
        (State.CONNECTED, Role.CALLER, {"hold": HoldState(True, True)}, "On hold (both"),
        (State.FAILED, Role.CALLER, {}, "Call ended"),
    ],
)
def test_the_status_line(state: State, role: Role, extra: dict[str, object], text: str) -> None:
    assert view.status_line(state, role=role, peer="bob", **extra).startswith(text)  # type: ignore[arg-type]


def test_reconnecting_is_said_before_hold() -> None:
    line = view.status_line(
        State.CONNECTED, role=Role.CALLER, peer="bob", reconnecting=True, hold=HoldState(True)
    )
    assert line.startswith("Reconnecting")


def test_mute_text() -> None:
    assert view.mute_text(True).startswith("MUTED")
    assert view.mute_text(False) == "microphone on"


@pytest.mark.parametrize(
    ("dbfs", "full", "tail"),
    [(None, 0, "–"), (0.0, 20, "0 dB"), (-30.0, 10, "-30 dB"), (-100.0, 0, "-60 dB"),
     (-math.inf, 0, "-60 dB"), (6.0, 20, "6 dB")],
)  # fmt: skip
def test_the_level_meter(dbfs: float | None, full: int, tail: str) -> None:
    bar = view.level_bar(dbfs)
    assert bar.count("█") == full and bar.count("░") == 20 - full
    assert bar.endswith(tail)


@pytest.mark.parametrize(
    ("state", "role", "screen"),
    [
        (State.OFFERED, Role.CALLEE, "incoming"),
        (State.RINGING_IN, Role.CALLEE, "incoming"),
        (State.CONNECTING, Role.CALLEE, "in_call"),
        (State.DIALING, Role.CALLER, "in_call"),
        (State.RINGING_OUT, Role.CALLER, "in_call"),
        (State.CONNECTED, Role.CALLEE, "in_call"),
        (State.ENDED, Role.CALLEE, "end"),
        (State.FAILED, Role.CALLER, "end"),
    ],
)
def test_each_state_has_its_screen(state: State, role: Role, screen: str) -> None:
    assert view.screen_for(state, role) == screen


def test_the_end_summary_of_a_call_that_ran() -> None:
    heard = stats(playout=PlayoutCounters(played=500), started_at=1.0, path="host (udp)")
    end = view.end_summary(
        Outcome(EndReason.HANGUP_REMOTE), "bob", connected_at=10.0, ended_at=75.5, stats=heard
    )
    assert end.duration == "01:05"
    assert end.reason == "Call ended: bob hung up."
    assert end.quality[0].startswith("Audio received: 10.0 s; 0.0 % concealed")
    assert end.quality[1].startswith("Last measured: direct (udp)")
    assert not end.failed


def test_the_end_summary_of_a_call_that_never_connected() -> None:
    end = view.end_summary(
        Outcome(FailReason.ICE_FAILED, "tried 2 pairs"), "bob",
        connected_at=None, ended_at=3.0, stats=None,
    )  # fmt: skip
    assert end.duration == "never connected"
    assert end.reason == "Call ended: no network path to bob (ICE failed) (tried 2 pairs)."
    assert end.quality == ("No audio was received.",)
    assert end.failed


def test_a_contact_row_and_the_link_line() -> None:
    row = view.contact_row(contact(TrustState.VERIFIED, calls=1))
    assert row.split()[:4] == ["bob", "VERIFIED", "1", "call"]
    assert contact().fingerprint.human.split(" ")[0] in row
    assert view.link_line("wss://x", True) == "wss://x: online"
    assert view.link_line("wss://x", False, "connection reset") == (
        "wss://x: OFFLINE (connection reset, reconnecting)"
    )
    assert view.link_line("wss://x", False, "login refused", reconnecting=False) == (
        "wss://x: OFFLINE for good (login refused): quit and start again"
    )
