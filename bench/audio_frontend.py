"""Issue 13 benchmark: the audio front end (WebRTC APM via livekit) on a simulated laptop.

No devices and no network: tests/support/laptop.py plays the far end's speech through a
simulated speaker and mixes a delayed (30-600 ms), attenuated, reverberant copy of it into the
microphone with the near-end talker and -70 dBFS of self-noise. Measured, for the default front
end (echo cancellation, noise suppression, gain control, high-pass) and without gain control:

- far end only: ERLE at each delay (steady state from 1 s on, and over the whole clip);
- near end only: PESQ-WB of the output against the clean near-end speech, at a normal and a
  quiet (-10 dB) level, next to the raw microphone's;
- double talk: the far end talks alone for 4.6 s (the canceller converges), then the near end
  joins for 4.4 s, with the echo path at -10.5, -20 and -40 dB. On that stretch: ERLE, and
  PESQ-WB of the output and of its near-end part (split by phase inversion, :func:`double_talk`);
- CPU: processing time per second of audio.

    .venv/bin/python -m bench.audio_frontend     # ~20 s

Prints a table and writes bench/results/audio_frontend.json. Targets: docs/audio-frontend.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import write_results
from tests.support.laptop import Room, Take, erle_db, place, process, record, talkers
from voice.audio.base import SAMPLE_RATE
from voice.audio.frontend import AudioFrontEnd, FrontEndConfig
from voice.audio.quality import compare
from voice.audio.resample import FloatArray

RESULTS = Path(__file__).resolve().parent / "results" / "audio_frontend.json"
SCENE_S = 9.0
DELAYS_MS = (30, 60, 120, 250, 400, 500, 600)
NEAR_GAIN = 0.3  # near-end speech peaks about -13.5 dBFS at the microphone
QUIET_GAIN = 0.1  # a quiet talker, 10 dB lower
JOIN_S = 4.6  # the near end joins the far end here in the double-talk scene
# speaker to microphone: -10.5, -20 and -40 dB
ECHO_PATHS = {"loud echo": 0.3, "moderate echo": 0.1, "faint echo": 0.01}
CONFIGS = {
    "default": FrontEndConfig(),
    "no AGC": FrontEndConfig(auto_gain_control=False),
}


def _pesq(ref: FloatArray, deg: FloatArray) -> float | None:
    score = compare(ref, deg).pesq_wb
    return None if score is None else round(score, 3)


def far_end_only(config: FrontEndConfig, far: FloatArray, total: int) -> list[dict[str, Any]]:
    rows = []
    for delay in DELAYS_MS:
        take = record(Room(delay_ms=delay), place(far, 0.0, total), np.zeros(total))
        out = process(AudioFrontEnd(config), take)
        rows.append(
            {
                "delay_ms": delay,
                "erle_db": round(erle_db(take, out), 1),
                "erle_whole_clip_db": round(erle_db(take, out, from_s=0.0), 1),
            }
        )
    return rows


def near_end_only(config: FrontEndConfig, near: FloatArray, total: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for label, gain in (("normal", NEAR_GAIN), ("quiet", QUIET_GAIN)):
        take = record(Room(), np.zeros(total), place(near, 0.5, total, gain))
        report = compare(take.near, process(AudioFrontEnd(config), take))
        result[label] = {
            "pesq_wb": None if report.pesq_wb is None else round(report.pesq_wb, 3),
            "pesq_wb_microphone": _pesq(take.near, take.mic),
            "gain_db": None if report.gain_db is None else round(report.gain_db, 1),
        }
    return result


def double_talk(
    config: FrontEndConfig, far: FloatArray, near: FloatArray, total: int, echo_gain: float
) -> dict[str, Any]:
    """Figures for the double-talk stretch of the scene (from JOIN_S on).

    The output is split into what is left of the echo and what is left of the near end by
    phase inversion (Hagerman and Olofsson's method for nonlinear hearing aids): the scene runs
    twice, once with the near end and once with it inverted, on fresh front ends. Half the sum
    of the two outputs is the residual echo (and noise), half the difference the near end. It
    holds while the front end treats both runs alike, which it does as long as its gains follow
    power spectra, which inverting an uncorrelated talker does not change. A third run without
    the far end gives the near end as the front end leaves it when nobody else talks.
    """
    talk = place(near, JOIN_S, total, NEAR_GAIN)
    room, speaker = Room(echo_gain=echo_gain), place(far, 0.0, total)
    take: Take = record(room, speaker, talk)
    out = process(AudioFrontEnd(config), take)
    inverted = process(AudioFrontEnd(config), record(room, speaker, -talk))
    alone = process(AudioFrontEnd(config), record(room, np.zeros(total), talk))
    start = round(JOIN_S * SAMPLE_RATE)
    residual, kept = (out + inverted)[start:] / 2, (out - inverted)[start:] / 2
    echo, said = (take.mic - take.near)[start:], take.near[start:]

    def db(a: FloatArray, b: FloatArray) -> float:
        return round(float(10 * np.log10(np.sum(a**2) / max(float(np.sum(b**2)), 1e-9))), 1)

    return {
        "echo_to_near_db": db(echo, said),
        "erle_far_end_alone_db": round(erle_db(take, out, until_s=JOIN_S), 1),
        "erle_double_talk_db": db(echo, residual),
        "near_end_level_vs_alone_db": db(kept, alone[start:]),
        "pesq_wb": _pesq(said, out[start:]),
        "pesq_wb_microphone": _pesq(said, take.mic[start:]),
        "pesq_wb_near_end_part": _pesq(said, kept),
        "pesq_wb_near_end_alone": _pesq(said, alone[start:]),
    }


def pesq_reference(far: FloatArray, near: FloatArray, total: int) -> float | None:
    """PESQ-WB of the near end with the far end mixed in 30 dB lower: how harshly PESQ scores
    any competing talker (the double-talk PESQ figures read against it)."""
    talk = place(near, JOIN_S, total, NEAR_GAIN)
    start = round(JOIN_S * SAMPLE_RATE)
    mixed = talk + 10 ** (-30 / 20) * NEAR_GAIN * place(far, 0.0, total)
    return _pesq(talk[start:], mixed[start:])


def cpu_per_second(far: FloatArray, total: int) -> float:
    """Seconds of CPU per second of audio for the default front end (both directions)."""
    take = record(Room(), place(far, 0.0, total), np.zeros(total))
    began = time.process_time()
    process(AudioFrontEnd(), take)
    return (time.process_time() - began) / (total / SAMPLE_RATE)


def _num(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    from livekit.rtc import __version__ as livekit_version

    began = time.perf_counter()
    far, near = talkers()
    total = round(SCENE_S * SAMPLE_RATE)
    results: dict[str, Any] = {"library": f"livekit {livekit_version} (WebRTC APM)"}
    print(f"{results['library']}; simulated laptop, {SCENE_S:g} s scenes")
    for name, config in CONFIGS.items():
        rows = far_end_only(config, far, total)
        near_rows = near_end_only(config, near, total)
        talks = {
            label: double_talk(config, far, near, total, gain) for label, gain in ECHO_PATHS.items()
        }
        results[name] = {"far_end_only": rows, "near_end_only": near_rows, "double_talk": talks}
        print(f"\n[{name}] far end only: ERLE, dB (from 1 s / whole clip)")
        for row in rows:
            print(
                f"  delay {row['delay_ms']:>4} ms  {row['erle_db']:>6.1f}  "
                f"{row['erle_whole_clip_db']:>6.1f}"
            )
        print(f"[{name}] near end only: PESQ-WB (microphone -> front end), gain dB")
        for label, rec in near_rows.items():
            print(
                f"  {label:<7}{_num(rec['pesq_wb_microphone'], 7)} ->"
                f"{_num(rec['pesq_wb'], 5)}   {rec['gain_db']:+.1f}"
            )
        print(f"[{name}] double talk, 60 ms: far end alone for {JOIN_S} s, then both")
        print("  (dB; near: near-end level vs alone; PESQ-WB of mic, out, its near part, alone)")
        print(
            f"  {'':<14}{'echo/near':>10}{'ERLE alone':>11}{'ERLE DT':>8}{'near':>6}"
            f"{'PESQ mic':>9}{'out':>6}{'near part':>10}{'alone':>6}"
        )
        for label, t in talks.items():
            print(
                f"  {label:<14}{t['echo_to_near_db']:>10.1f}{t['erle_far_end_alone_db']:>11.1f}"
                f"{t['erle_double_talk_db']:>8.1f}{t['near_end_level_vs_alone_db']:>6.1f}"
                f"{_num(t['pesq_wb_microphone'], 9)}{_num(t['pesq_wb'], 6)}"
                f"{_num(t['pesq_wb_near_end_part'], 10)}{_num(t['pesq_wb_near_end_alone'], 6)}"
            )
    reference = pesq_reference(far, near, total)
    results["pesq_wb_near_end_plus_far_end_at_minus_30_db"] = reference
    print(f"\nPESQ-WB scale: near end + far end 30 dB lower, unprocessed: {_num(reference, 0)}")
    cpu = cpu_per_second(far, total)
    results["cpu_seconds_per_audio_second"] = round(cpu, 4)
    print(f"\nCPU: {100 * cpu:.1f} % of one core (default front end, both directions)")
    results["seconds"] = round(time.perf_counter() - began, 1)
    write_results(RESULTS, results)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
