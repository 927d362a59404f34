"""The end-of-call audio line: it reports what was concealed, and nothing when nothing was heard."""

from __future__ import annotations

import dataclasses

from voice.cli.summary import audio_summary
from voice.media.jitter import JitterStats
from voice.media.receiver import PlayoutCounters
from voice.media.stats import MediaStats


def stats(playout: PlayoutCounters, jitter: JitterStats | None) -> MediaStats:
    fields = {f.name: 0 for f in dataclasses.fields(MediaStats)}
    fields.update(playout=playout, jitter=jitter, srtp_packet_sizes=(), opus_payload_sizes=())
    fields.update(srtp_packet_sizes_received=(), path=None, rtt_seconds=None)
    fields.update(remote_fraction_lost=None, ice_connect_seconds=None)
    return MediaStats(**fields)  # type: ignore[arg-type]


def test_the_summary_counts_concealed_and_rebuilt_audio() -> None:
    playout = PlayoutCounters(played=780, fec_recovered=12, concealed=6, silenced=2)
    playout.accelerated, playout.expanded, playout.stretched_ms = 3, 1, -12.5
    jitter = JitterStats(lost=15, underruns=1, delay_ms=24.4)
    line = audio_summary(stats(playout, jitter))
    assert line == (
        "Audio received: 16.0 s; 1.0 % concealed (8 frames; packets lost: 15, gaps in arrival: 1);"
        " 12 frames rebuilt from FEC; time-stretched 4 times (-12 ms); receive delay 24 ms."
    )


def test_no_summary_when_no_audio_arrived() -> None:
    assert audio_summary(stats(PlayoutCounters(waited=100, silenced=50), JitterStats())) is None


def test_one_frame_is_one_frame() -> None:
    playout = PlayoutCounters(played=900, concealed=1)
    line = audio_summary(stats(playout, JitterStats(underruns=1)))
    assert line is not None and "(1 frame; packets lost: 0, gaps in arrival: 1)" in line
