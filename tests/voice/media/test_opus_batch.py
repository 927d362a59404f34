"""The batch encoder (``encode_many`` with the helper of ``voice.media.opusbatch``): the same
bytes as frame-by-frame encoding, one frame's failure stays its own, and C never sees a closed
state or a state another thread may retune."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from voice.errors import CodecError
from voice.media import opusbatch
from voice.media.opus import FRAME_BYTES, FRAME_SAMPLES, OpusEncoder, OpusSettings, encode_many

needs_helper = pytest.mark.skipif(
    opusbatch.load() is None, reason="batch helper not built (scripts/build-opusbatch.sh)"
)


def frames(count: int, seed: int) -> list[bytes]:
    """Speech-like frames: a gliding tone with noise, different for every seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(count * FRAME_SAMPLES) / 48_000
    hz = 200 + 150 * np.sin(2 * np.pi * 0.7 * t) + 40 * seed
    wave = 6000 * np.sin(2 * np.pi * np.cumsum(hz) / 48_000) + rng.normal(0, 500, t.size)
    pcm = np.clip(wave, -32768, 32767).astype("<i2").tobytes()
    return [pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(count)]


SETTINGS = [
    OpusSettings(),
    OpusSettings(bitrate=16_000, complexity=1),
    OpusSettings(bitrate=64_000, complexity=5, packet_loss_perc=0, fec=False),
    OpusSettings(bitrate=24_000, cbr=False, max_bandwidth="fullband"),
]


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Wrap the helper: record, for every call, the states passed and whether their encoders'
    locks were held."""
    real = opusbatch.load()
    assert real is not None
    calls: list[dict[str, Any]] = []
    watched: list[OpusEncoder] = []

    def wrapper(*args: Any) -> int:
        n, states = args[1], args[2]
        calls.append(
            {
                "states": [states[k] for k in range(n)],
                "locked": [e._lock.locked() for e in watched],
            }
        )
        return int(real(*args))

    monkeypatch.setattr(opusbatch, "_encode", wrapper)
    calls.append({"watch": watched})
    yield calls


@needs_helper
def test_a_batch_gives_the_same_bytes_as_frame_by_frame_on_twin_encoders() -> None:
    streams = [frames(25, seed) for seed in range(len(SETTINGS))]
    batched = [OpusEncoder(s) for s in SETTINGS]
    direct = [OpusEncoder(s) for s in SETTINGS]
    for n in range(25):
        if n == 10:  # retuned mid-stream, as the ladder and the governor do
            for enc in (batched[0], direct[0]):
                enc.set_bitrate(32_000)
                enc.set_complexity(3)
                enc.set_packet_loss_perc(20)
        jobs = [(enc, stream[n]) for enc, stream in zip(batched, streams, strict=True)]
        got, busy = encode_many(jobs)
        want = [enc.encode(stream[n]) for enc, stream in zip(direct, streams, strict=True)]
        assert got == want and busy > 0.0


@needs_helper
def test_one_encoder_twice_in_a_batch_encodes_its_frames_in_order() -> None:
    a, b = OpusEncoder(), OpusEncoder()
    pcm = frames(3, 7)
    got, _ = encode_many([(a, pcm[0]), (a, pcm[1]), (a, pcm[2])])  # its lock is taken once
    assert got == [b.encode(p) for p in pcm]


@needs_helper
def test_a_failing_frame_fails_alone_and_closed_states_never_reach_c(
    recording: list[dict[str, Any]],
) -> None:
    good, gone, other, twin_good, twin_other = (OpusEncoder() for _ in range(5))
    recording[0]["watch"].extend([good, other])
    gone_state = gone._state
    gone.close()
    pcm = frames(1, 3)[0]
    got, _ = encode_many([(good, pcm), (gone, pcm), (other, pcm[:-2]), (other, pcm)])
    assert got[0] == twin_good.encode(pcm)
    assert isinstance(got[1], CodecError) and "closed" in str(got[1])
    assert isinstance(got[2], CodecError) and "1920 bytes" in str(got[2])
    assert got[3] == twin_other.encode(pcm)
    (call,) = recording[1:]
    assert call["states"] == [good._state, other._state]  # not the closed one's, not a bad frame
    assert gone_state not in call["states"]
    assert call["locked"] == [True, True]  # every encoder's lock held while C runs
    assert not good._lock.locked() and not other._lock.locked()  # and released after


def test_without_the_helper_the_bytes_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    pcm = frames(5, 1)
    first = OpusEncoder()
    with_helper, _ = encode_many([(first, p) for p in pcm[:2]])  # batch path if it is built
    monkeypatch.setenv("VOICE_OPUSBATCH", "0")
    opusbatch.reset()
    try:
        assert opusbatch.load() is None
        rest, _ = encode_many([(first, p) for p in pcm[2:]])  # frame by frame, same state
        twin = OpusEncoder()
        assert with_helper + rest == [twin.encode(p) for p in pcm]
    finally:
        monkeypatch.delenv("VOICE_OPUSBATCH")
        opusbatch.reset()


def hammer(stop: threading.Event, action: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@needs_helper
def test_retuning_and_closing_from_another_thread_during_batches_is_safe() -> None:
    """The loop thread retunes (and a hang-up closes) encoders while a worker encodes them:
    each frame is a whole packet of the size in force or a 'closed' error, never a crash."""
    encoders = [OpusEncoder() for _ in range(8)]
    pcm = frames(1, 5)[0]
    stop = threading.Event()
    rates = iter(range(10**9))

    def retune() -> None:
        k = next(rates)
        enc = encoders[k % len(encoders)]
        try:
            enc.set_bitrate(16_000 + 8_000 * (k % 3))
            enc.set_complexity(k % 11)
        except CodecError:
            pass  # closed meanwhile

    thread = hammer(stop, retune)
    sizes: set[int] = set()
    try:
        for n in range(300):
            if n % 40 == 39:
                encoders[n // 40].close()
            got, _ = encode_many([(enc, pcm) for enc in encoders])
            for enc, item in zip(encoders, got, strict=True):
                if isinstance(item, CodecError):
                    assert enc._state is None and "closed" in str(item)
                else:
                    sizes.add(len(item))
    finally:
        stop.set()
        thread.join()
    assert sizes <= {40, 60, 80, 100}  # CBR: bitrate / 400 bytes of a rate set (100: the first)
    for enc in encoders:
        enc.close()


def test_the_helper_is_built_wherever_setup_built_libopus() -> None:
    """The helper tests above skip without the helper: a broken build must not turn them all
    into skips. Where setup built libopus 1.6.1, it built (and we load) the helper too."""
    libopus_built = (opusbatch.HELPER.parent.parent / "libopus" / ".complete").exists()
    if not libopus_built or os.environ.get("VOICE_OPUSBATCH") == "0":
        pytest.skip("no libopus 1.6.1 build here (setup fell back to the system's)")
    assert opusbatch.load() is not None
