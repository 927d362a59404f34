"""How a call ended, in words: why (:func:`end_text`), and the line about the audio it received
(:func:`audio_summary`): how much, how much of it was made up.

A secure phone should say when it filled gaps (concealment, packets rebuilt from FEC) instead
of letting a user trust audio that was partly synthesised. Counters only: nothing about the
content of the audio, no keys.
"""

from __future__ import annotations

from voice.audio.base import FRAME_SECONDS
from voice.call.events import EndReason, FailReason
from voice.media.stats import MediaStats

__all__ = ["END_TEXT", "audio_summary", "end_text"]

END_TEXT: dict[EndReason | FailReason, str] = {
    EndReason.HANGUP_LOCAL: "you hung up",
    EndReason.HANGUP_REMOTE: "{peer} hung up",
    EndReason.DECLINED_LOCAL: "you declined",
    EndReason.DECLINED_REMOTE: "{peer} declined the call",
    EndReason.BUSY: "{peer} is busy (in another call)",
    EndReason.CANCELLED_LOCAL: "you cancelled the call",
    EndReason.CANCELLED_REMOTE: "{peer} cancelled the call",
    EndReason.NO_ANSWER: "no answer from {peer}",
    EndReason.GLARE_LOST: "{peer} called you at the same time; that call went ahead",
    FailReason.KEY_CHANGED: "{peer}'s identity key changed",
    FailReason.COMMITMENT_MISMATCH: "{peer}'s key did not match its commitment (possible attack)",
    FailReason.BAD_KEY: "{peer} sent an invalid key",
    FailReason.ICE_FAILED: "no network path to {peer} (ICE failed)",
    FailReason.MEDIA_FAILED: "the audio connection failed",
    FailReason.PEER_VANISHED: "{peer} went offline",
    FailReason.BAD_MESSAGE: "{peer} sent a malformed message",
    FailReason.SETUP_TIMEOUT: "the call was accepted but the keys never became ready",
    FailReason.REMOTE_ERROR: "{peer} reported an error",
    FailReason.SIGNALING_LOST: "lost the connection to the signaling server during call setup",
    FailReason.UNREACHABLE: "{peer}'s phone did not ring: it is offline or its network is down",
    FailReason.NO_MEDIA_PATH: "no audio path to {peer} could be found",
    FailReason.MEDIA_LOST: "the audio from {peer} stopped and the connection did not come back",
    FailReason.UNSUPPORTED_VERSION: (
        "{peer}'s app and yours share no post-quantum key-agreement version (one of you needs "
        "to update), or someone edited the versions offered"
    ),
}


def end_text(reason: EndReason | FailReason, peer: str) -> str:
    """Why the call with ``peer`` ended, as the line mode and the call screen both say it."""
    template: str = END_TEXT.get(reason, reason.value)
    return template.format(peer=peer)


def audio_summary(stats: MediaStats) -> str | None:
    """``Audio received: 16.0 s; 0.4 % concealed (...); ...``, or None if nothing was heard."""
    playout, jitter = stats.playout, stats.jitter
    if playout.played == 0:
        return None
    concealed = playout.concealed + playout.silenced
    frames = playout.played + playout.fec_recovered + concealed
    why = f"{concealed} frame{'' if concealed == 1 else 's'}"
    if jitter is not None:
        why += f"; packets lost: {jitter.lost}, gaps in arrival: {jitter.underruns}"
    parts = [
        f"Audio received: {frames * FRAME_SECONDS:.1f} s",
        f"{100.0 * concealed / frames:.1f} % concealed ({why})",
        f"{playout.fec_recovered} frames rebuilt from FEC",
    ]
    if playout.accelerated or playout.expanded:
        parts.append(
            f"time-stretched {playout.accelerated + playout.expanded} times "
            f"({playout.stretched_ms:+.0f} ms)"
        )
    if jitter is not None:
        parts.append(f"receive delay {jitter.delay_ms:.0f} ms")
    return "; ".join(parts) + "."
