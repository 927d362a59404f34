"""A real call through real pyaudio devices: PulseAudio null sinks stand in for the sound cards.

    paplay --> voice_mic --monitor--> alice: voice call --input pulse (pyaudio microphone)
        ==== signaling (python -m signaling) + SRTP on loopback ====>
    bob: voice listen --output pulse (pyaudio speaker) --> voice_spk --monitor--> parec

Everything runs as separate processes, as a user would run it; PULSE_SINK / PULSE_SOURCE pick
the null sink per process. The recording must match the speech sample. The player and the
recorder at the ends are PulseAudio's own ``paplay`` and ``parecord`` (generous buffers): a
pyaudio blocking-write player inserted 10-40 ms gaps of silence whenever the loaded 2-core CI
machine kept it waiting, and a gap in the test's own harness cannot be told apart from a fault
in the call. The devices under test are alice's pyaudio microphone and bob's pyaudio speaker.
A null sink can still stall when a stream starts, so the speech is played PLAYS times, recorded
for long enough, and the best play counts.

Alice's microphone is sent as it is (``--no-audio-processing``): the audio front end's gain
control and noise suppression change the waveform over time, and this test compares waveforms
to check the devices. The front end is tested on its own (tests/voice/audio/test_frontend.py,
PESQ-WB of speech through it) and on the device path (tests/voice/test_cli_audio.py).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.voice.cli_harness import REPO, signaling_server, start_voice
from voice.audio.base import SAMPLE_RATE, Int16Array
from voice.audio.quality import QualityReport, compare
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav, write_wav
from voice.exitcodes import ExitCode

pytestmark = pytest.mark.timeout(120)

MIN_CORRELATION = 0.5  # unrelated audio scores ~0.05; a clean run here scores ~0.96
MIN_PESQ_WB = 2.0  # a clean run here scores ~4.2
PLAYS = 2


def best_repetition(sent: Int16Array, heard: Int16Array, plays: int) -> QualityReport:
    """Score each of the plays found in the recording; keep the best one.

    A real-time pipeline on a loaded 2-core machine can glitch (a null-sink stall, a
    scheduling hiccup); the claim under test is that speech goes through, not that every
    second of it does.
    """
    reports: list[QualityReport] = []
    rest = heard.copy()
    for _ in range(plays):
        found = compare(sent, rest, max_lag_s=rest.size / SAMPLE_RATE)
        reports.append(found)
        if found.delay_ms is None:
            break
        start = max(0, round(found.delay_ms * SAMPLE_RATE / 1000))
        rest[start : start + sent.size] = 0  # look for the next play elsewhere
    return max(reports, key=lambda r: r.correlation)


def _pactl(*args: str) -> str:
    return subprocess.run(["pactl", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def null_sinks() -> Iterator[None]:
    """Two 48 kHz mono null sinks, voice_mic and voice_spk, unloaded after the test."""
    subprocess.run(["bash", str(REPO / "scripts" / "pulse.sh")], check=True)
    modules = [
        _pactl(
            "load-module", "module-null-sink", f"sink_name={name}", "rate=48000", "channels=1"
        ).strip()
        for name in ("voice_mic", "voice_spk")
    ]
    try:
        yield
    finally:
        for module in modules:
            subprocess.run(["pactl", "unload-module", module], check=False, capture_output=True)


async def _errors(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    return (await proc.stderr.read()).decode(errors="replace")[-2000:]


async def _start_recording(raw: Path, source: str) -> asyncio.subprocess.Process:
    """``parec`` from ``source`` into ``raw`` (s16le mono 48 kHz); returns once samples flow."""
    with raw.open("wb") as out:
        recorder = await asyncio.create_subprocess_exec(
            "parec", f"--device={source}", "--format=s16le", f"--rate={SAMPLE_RATE}",
            "--channels=1", stdout=out, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    async with asyncio.timeout(20):
        # A null sink's monitor streams silence: bytes arrive as soon as parec is recording.
        while (await asyncio.to_thread(raw.stat)).st_size < SAMPLE_RATE // 10:
            assert recorder.returncode is None, await _errors(recorder)
            await asyncio.sleep(0.05)
    return recorder


async def _play(speech: Path, plays: int, sink: str, workdir: Path) -> None:
    """``paplay`` 0.5 s of silence then ``plays`` copies of ``speech`` into ``sink``."""
    clip = workdir / "played.wav"
    once = load_wav(speech, SAMPLE_RATE)
    write_wav(clip, np.concatenate([np.zeros(SAMPLE_RATE // 2, np.int16), *[once] * plays]))
    player = await asyncio.create_subprocess_exec(
        "paplay", f"--device={sink}", str(clip), stderr=asyncio.subprocess.PIPE
    )
    assert await asyncio.wait_for(player.wait(), 40) == 0, await _errors(player)


async def test_call_from_a_pyaudio_microphone_to_a_pyaudio_speaker(
    null_sinks: None, tmp_path: Path
) -> None:
    speech = speech_sample()
    recording = tmp_path / "heard.s16le"
    talk = PLAYS * load_wav(speech, SAMPLE_RATE).size / SAMPLE_RATE + 5.0  # stalls, start-up
    async with signaling_server() as url:
        bob = await start_voice(tmp_path / "bob", "listen", "--auto-answer", "--silence",
                                "--output", "pulse", "--no-prompt", server=url, user="bob",
                                env={"PULSE_SINK": "voice_spk"})  # fmt: skip
        await bob.wait_for("Waiting for a call")
        recorder = await _start_recording(recording, "voice_spk.monitor")
        try:
            alice = await start_voice(tmp_path / "alice", "call", "bob", "--input", "pulse",
                                      "--no-audio-processing", "--no-output", "--no-prompt",
                                      "--duration", str(talk),
                                      server=url, user="alice",
                                      env={"PULSE_SOURCE": "voice_mic.monitor"})  # fmt: skip
            await alice.wait_for("Connected")
            await _play(speech, PLAYS, "voice_mic", tmp_path)
            assert await alice.finish(30) == ExitCode.OK, alice.stdout + alice.stderr
            assert await bob.stop_listening(30) == ExitCode.OK, bob.stdout + bob.stderr
        finally:
            recorder.terminate()
            await asyncio.wait_for(recorder.wait(), 10)
    sent = load_wav(speech, SAMPLE_RATE)
    heard = np.frombuffer(recording.read_bytes()[: recording.stat().st_size // 2 * 2], "<i2")
    report = best_repetition(sent, heard, PLAYS)
    assert report.correlation > MIN_CORRELATION, report
    assert report.pesq_wb is not None and report.pesq_wb > MIN_PESQ_WB, report
