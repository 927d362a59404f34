"""The line a call ends with about the audio it received: how much, how much of it was made up.

A secure phone should say when it filled gaps (concealment, packets rebuilt from FEC) instead
of letting a user trust audio that was partly synthesised. Counters only: nothing about the
content of the audio, no keys.
"""

from __future__ import annotations

from voice.audio.base import FRAME_SECONDS
from voice.media.stats import MediaStats


def audio_summary(stats: MediaStats) -> str | None:
    """``Audio received: 16.0 s; 0.4 % concealed (...); ...``, or None if nothing was heard."""
    playout, jitter = stats.playout, stats.jitter
    if playout.played == 0:
        return None
    concealed = playout.concealed + playout.silenced
    frames = playout.played + playout.fec_recovered + concealed
    why = f"{concealed} frames"
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
