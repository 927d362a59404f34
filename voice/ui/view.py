"""What the call screens show, as text: pure functions of plain values (no terminal, no I/O).

The screens (:mod:`voice.ui.screens`) only place these strings. What a user reads about trust,
the SAS, time, the network and why a call ended is decided here, so it is tested without a
terminal, and it says the same as the line mode (:mod:`voice.cli.calls`, :mod:`voice.cli.listen`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from voice.call.events import EndReason, FailReason, HoldState, Outcome, Role, State
from voice.cli.summary import audio_summary, end_text
from voice.crypto.contacts import Contact, TrustState
from voice.crypto.continuity import ContinuityResult
from voice.crypto.sas import Sas
from voice.media.stats import MediaStats
from voice.phone.history import CallRecord

__all__ = [
    "Badge",
    "EndSummary",
    "ScreenName",
    "call_row",
    "contact_row",
    "continuity_line",
    "devices_line",
    "end_summary",
    "level_bar",
    "link_line",
    "mute_text",
    "network_line",
    "path_text",
    "recent_heading",
    "sas_emoji_line",
    "sas_words_line",
    "screen_for",
    "status_line",
    "timer_text",
    "trust_badge",
]

Tone = Literal["good", "plain", "warn", "bad"]
ScreenName = Literal["incoming", "in_call", "end"]
CODEC = "Opus"  # the only codec: 48 kHz, constant bitrate (voice.media.opus)
METER_FLOOR_DB = -60.0  # quieter than this reads as an empty meter


@dataclass(frozen=True)
class Badge:
    """A trust state as one word (``label``), what it means (``detail``) and its colour."""

    label: str
    detail: str
    tone: Tone


def trust_badge(contact: Contact | None, *, verified_now: bool = False) -> Badge:
    """The contact book's view of a peer, as the badge next to their name.

    ``contact`` is the book's entry as the call began; ``verified_now``: the user compared the
    SAS on this call and said it matched. NEW is what ``voice listen`` calls "new": nobody we
    verified or called, and no call with this key connected yet."""
    if verified_now:
        return Badge("VERIFIED", "you compared the security code on this call", "good")
    if contact is None or (contact.connected_calls == 0 and not contact.solicited):
        return Badge("NEW", "not a contact you verified or called", "warn")
    if contact.state is TrustState.CHANGED:
        return Badge(
            "CHANGED",
            "another key was also presented under this name: see 'voice contacts'",
            "bad",
        )
    if contact.state is TrustState.VERIFIED:
        return Badge("VERIFIED", "you compared the security code or the fingerprint", "good")
    return Badge("UNVERIFIED", "compare the security code to verify", "plain")


def continuity_line(contact: Contact | None, result: ContinuityResult | None = None) -> str:
    """How much history this key has with us: the count is of calls that connected under the
    pinned key before this one; a MATCH means a secret kept from an earlier call is in this
    call's keys (a man in the middle would have had to be there since)."""
    earlier = contact.connected_calls if contact is not None else 0
    text = (
        "first call with this key"
        if earlier == 0
        else f"{earlier} earlier call{'' if earlier == 1 else 's'} with this key"
    )
    if result is ContinuityResult.MATCH:
        text += "; keys continue from the last call"
    return text


def sas_words_line(sas: Sas) -> str:
    """The words to read aloud, as the line mode prints them (upper case)."""
    return "  ".join(sas.words).upper()


def sas_emoji_line(sas: Sas) -> str:
    """The same code as emoji, each with its name (a terminal without emoji still shows it)."""
    return "   ".join(f"{e} {n}" for e, n in zip(sas.emoji, sas.emoji_names, strict=True))


def timer_text(seconds: float | None) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour); ``--:--`` before the call connected."""
    if seconds is None:
        return "--:--"
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def path_text(path: str | None) -> str:
    """The media path in a user's words: direct, NAT (through a reflexive address) or relay.

    ``path`` is :class:`voice.media.ice.MediaPath` as a string: ``"<kind> (<transport>)"``."""
    if not path:
        return "path unknown"
    kind, _, transport = path.partition(" ")
    words = {"host": "direct", "srflx": "NAT", "relay": "relay"}.get(kind, kind)
    return f"{words} {transport}".strip()


def network_line(stats: MediaStats | None) -> str:
    """``direct (udp) · RTT 12 ms · loss 0.0 % · jitter 3 ms · 32 kbit/s Opus``; a dash for a
    figure not measured yet (RTT and loss come with the peer's first RTCP report)."""
    if stats is None:
        return "network: no media yet"
    rtt = "RTT –" if stats.rtt_seconds is None else f"RTT {stats.rtt_seconds * 1000:.0f} ms"
    lost = stats.remote_fraction_lost
    loss = "loss –" if lost is None else f"loss {lost * 100:.1f} %"
    jitter = f"jitter {stats.interarrival_jitter_ms:.0f} ms"
    rate = f"{stats.encoder_bitrate / 1000:.0f} kbit/s {CODEC}" if stats.encoder_bitrate else CODEC
    return " · ".join([path_text(stats.path), rtt, loss, jitter, rate])


def status_line(
    state: State,
    *,
    role: Role,
    peer: str,
    reconnecting: bool = False,
    hold: HoldState | None = None,
) -> str:
    """The one line that says what the call is doing now."""
    if state is State.CONNECTED:
        if reconnecting:
            return f"Reconnecting: no audio from {peer} for a moment..."
        if hold is not None and hold.local and hold.remote:
            return "On hold (both of you)"
        if hold is not None and hold.local:
            return "On hold: you hold the call (h resumes)"
        if hold is not None and hold.remote:
            return f"On hold: {peer} holds the call"
        return "Connected: audio is end-to-end encrypted"
    if state.terminal:
        return "Call ended"
    if state is State.DIALING or state is State.IDLE:
        return f"Calling {peer}..."
    if state is State.RINGING_OUT:
        return f"Ringing {peer}..."
    if role is Role.CALLEE and state in (State.OFFERED, State.RINGING_IN):
        return f"{peer} is calling"
    return "Connecting: agreeing on keys..."


def mute_text(muted: bool) -> str:
    return "MUTED: the peer hears silence (m unmutes)" if muted else "microphone on"


def level_bar(dbfs: float | None, width: int = 20) -> str:
    """A meter from METER_FLOOR_DB to 0 dBFS: ``██████░░░░ -24 dB``; empty before any audio."""
    if dbfs is None or math.isnan(dbfs):
        return "░" * width + "     –"
    filled = round(width * (min(0.0, max(METER_FLOOR_DB, dbfs)) - METER_FLOOR_DB) / -METER_FLOOR_DB)
    shown = max(dbfs, METER_FLOOR_DB)
    return "█" * filled + "░" * (width - filled) + f" {shown:4.0f} dB"


def screen_for(state: State, role: Role) -> ScreenName:
    """Which screen a call belongs on: a ringing incoming call asks; an ended call sums up;
    everything else (dialing, ringing out, connecting, connected) is the call screen."""
    if state.terminal:
        return "end"
    if role is Role.CALLEE and state in (State.OFFERED, State.RINGING_IN):
        return "incoming"
    return "in_call"


@dataclass(frozen=True)
class EndSummary:
    duration: str
    reason: str
    quality: tuple[str, ...]
    failed: bool


def end_summary(
    outcome: Outcome,
    peer: str,
    *,
    connected_at: float | None,
    ended_at: float | None,
    stats: MediaStats | None,
) -> EndSummary:
    """How long the call lasted, why it ended (worded as the line mode words it), and what the
    audio was like (the line mode's summary, and the last network figures)."""
    reason: EndReason | FailReason = outcome.reason
    text = end_text(reason, peer)
    if outcome.detail:
        text += f" ({outcome.detail})"
    if connected_at is None or ended_at is None:
        duration = "never connected"
    else:
        duration = timer_text(ended_at - connected_at)
    quality: list[str] = []
    summary = audio_summary(stats) if stats is not None else None
    quality.append(summary or "No audio was received.")
    if stats is not None and stats.started_at is not None:
        quality.append("Last measured: " + network_line(stats))
    return EndSummary(duration, f"Call ended: {text}.", tuple(quality), outcome.failed)


def contact_row(contact: Contact) -> str:
    """One line of the home screen's contact list: name, trust, history, fingerprint start."""
    badge = trust_badge(contact)
    calls = contact.connected_calls
    history = f"{calls} call{'' if calls == 1 else 's'}"
    start = " ".join(contact.fingerprint.human.split(" ")[:2])
    return f"{contact.user:<16} {badge.label:<10} {history:<9} {start} ..."


def link_line(
    server: str, online: bool, reason: str | None = None, *, reconnecting: bool = True
) -> str:
    """The server and whether we can be reached. The phone reconnects by itself, unless the
    loss was fatal (the login refused, another server): then only a restart helps."""
    if online:
        return f"{server}: online"
    if not reconnecting:
        return f"{server}: OFFLINE for good ({reason or 'lost'}): quit and start again"
    why = f"{reason}, " if reason else ""
    return f"{server}: OFFLINE ({why}reconnecting)"


_RESULT_TEXT = {
    "answered": "",  # the duration says it
    "missed": "MISSED",
    "declined": "declined",
    "busy": "busy",
    "no answer": "no answer",
    "cancelled": "cancelled",
    "failed": "failed",
}


def call_row(record: CallRecord, now: float, tz: tzinfo | None = None) -> str:
    """One line of the recent calls: which way, who, how it went, when (the time alone for
    today's calls, else the day too; ``tz`` None: the local time zone)."""
    arrow = "<-" if record.direction == "in" else "->"
    if record.result == "answered" and record.seconds is not None:
        how = timer_text(record.seconds)
    else:
        how = _RESULT_TEXT[record.result]
    when = datetime.fromtimestamp(record.at, tz)
    today = datetime.fromtimestamp(now, tz).date() == when.date()
    stamp = when.strftime("%H:%M" if today else "%d %b %H:%M")
    return f"{arrow} {record.peer:<16} {how:<10} {stamp}"


def recent_heading(records: list[CallRecord]) -> str:
    """The heading of the recent calls, with how many of them were missed."""
    missed = sum(r.missed for r in records)
    if not records:
        return "Recent calls: none yet"
    return "Recent calls" + (f" ({missed} missed):" if missed else ":")


def devices_line(microphone: str | None, speaker: str | None) -> str:
    """The call's devices (i and o switch them); a direction that is not a device is left out."""
    parts = []
    if microphone is not None:
        parts.append(f"Microphone: {microphone}")
    if speaker is not None:
        parts.append(f"Speaker: {speaker}")
    return " · ".join(parts)
