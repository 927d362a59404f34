"""Clock drift: a sender whose clock runs 0.5 % fast or slow for minutes.

The depth must stay bounded near the target, and every frame dropped or inserted to follow the
drift must fall in a pause (the buffer was told the last frame was silent), never in speech.
"""

from __future__ import annotations

import pytest

from tests.voice.media.test_jitter import FRAME, simulate
from voice.media.jitter import Conceal, Play


def talk(k: int) -> bool:
    """Silent? 1.66 s of speech, then 0.54 s of pause (not a multiple of the drift period)."""
    return k % 110 >= 83


@pytest.mark.parametrize("rate", [1.005, 1 / 1.005])
def test_drift_is_followed_in_silence_only(rate: float) -> None:
    frames = 3 * 60 * 50  # three minutes
    run = simulate(frames, sender_rate=rate, silent=talk, delay=lambda k: 0.005)
    st = run.jb.stats
    expected = frames * abs(1 - 1 / rate)  # frames the sender gains or loses: about 45
    if rate > 1:
        assert st.dropped >= expected - 3 and st.inserted <= 1
    else:
        assert st.inserted >= expected - 3 and st.dropped <= 1
    # adjustments only while the last decoded frame was silent
    for tick in run.ticks:
        if tick.stats_delta["dropped"] or tick.stats_delta["inserted"]:
            assert tick.silent_before
    # nothing lost; once the drift is measured (2 s) no underrun conceals a frame of speech
    assert st.lost == 0 and st.late == 0
    assert not any(t.stats_delta["underruns"] for t in run.ticks[100:])
    assert st.concealed == st.inserted + st.underruns
    # the depth stays near the target: the delay never exceeds target + two frames
    delays = [t.delay_ms for t in run.ticks if isinstance(t.decision, Play | Conceal)]
    assert max(delays) < (st.target_delay_frames + 2) * FRAME * 1000
    assert min(delays) >= 0
    played = run.played()
    assert played == sorted(played) and len(set(played)) == len(played)


def test_without_silence_notes_the_buffer_never_adjusts_but_stays_bounded() -> None:
    frames = 60 * 50
    run = simulate(frames, sender_rate=1.005, delay=lambda k: 0.005)
    st = run.jb.stats
    assert st.inserted == 0
    # only the hard limit drops frames in speech: the delay never runs away
    delays = [t.delay_ms for t in run.ticks]
    assert max(delays) < (st.target_delay_frames + 11) * FRAME * 1000 + 5
