"""Tests of the libopus binding: round trip, constant packet size, FEC against PLC, bad input."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.errors import CodecError, CodecUnavailable, VoiceError
from voice.media import libopus, opus
from voice.media.opus import FRAME_BYTES, FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusSettings

RATE = 48_000


def tone(seconds: float, hz: float = 1000.0, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2")


def speechlike(seconds: float) -> np.ndarray:
    """Voiced speech stand-in: a gliding pitch with 14 harmonics, syllable-rate envelope."""
    t = np.arange(int(RATE * seconds)) / RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (6000 * voiced * envelope).astype("<i2")


def noise(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 4000, int(RATE * seconds)), -32768, 32767).astype("<i2")


def frames(signal: np.ndarray) -> list[bytes]:
    n = len(signal) // FRAME_SAMPLES
    return [signal[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].tobytes() for i in range(n)]


def pcm(data: bytes | list[bytes]) -> np.ndarray:
    joined = data if isinstance(data, bytes) else b"".join(data)
    return np.frombuffer(joined, dtype="<i2").astype(np.float64)


def codec_delay(original: np.ndarray, decoded: np.ndarray) -> int:
    """Samples by which the decoded signal lags the original (the encoder's lookahead)."""
    a, b = original[: RATE // 2].astype(np.float64), decoded
    return max(range(0, 1000), key=lambda lag: float(np.dot(b[lag : lag + len(a)], a)))


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    err = float(np.sum((reference - test) ** 2))
    return 10 * float(np.log10(float(np.sum(reference**2)) / max(err, 1e-9)))


def test_round_trip_keeps_a_tone() -> None:
    signal = tone(1.0, hz=1000.0)
    with OpusEncoder() as enc, OpusDecoder() as dec:
        out = pcm([dec.decode(enc.encode(f)) for f in frames(signal)])
    assert len(out) == len(signal)
    steady = out[RATE // 4 :]
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    peak_hz = np.argmax(spectrum) * RATE / len(steady)
    assert abs(peak_hz - 1000.0) < 5
    lag = codec_delay(signal, out)
    corr = np.corrcoef(signal[RATE // 4 : -lag - 1], out[RATE // 4 + lag : -1])[0, 1]
    assert corr > 0.95


@pytest.mark.parametrize("bitrate", [32_000, 24_000, 64_000])
def test_cbr_gives_one_packet_size_for_tone_speech_noise_and_silence(bitrate: int) -> None:
    enc = OpusEncoder(OpusSettings(bitrate=bitrate))
    assert not enc.vbr and not enc.dtx
    silence = np.zeros(RATE, dtype="<i2")
    mixed = np.concatenate([tone(0.5), silence, speechlike(1.0), noise(0.5), silence, tone(0.3)])
    sizes = {len(enc.encode(f)) for f in frames(mixed)}
    enc.set_packet_loss_perc(30)  # retuning FEC does not change the size either
    sizes |= {len(enc.encode(f)) for f in frames(np.concatenate([speechlike(0.5), silence]))}
    assert sizes == {bitrate * 20 // 1000 // 8}  # 80 bytes at 32 kbit/s
    enc.close()


def test_vbr_setting_really_changes_the_encoder() -> None:
    """The CBR test above would be meaningless if sizes were constant anyway."""
    enc = OpusEncoder(OpusSettings(cbr=False))
    assert enc.vbr
    mixed = np.concatenate([speechlike(0.5), np.zeros(RATE // 2, dtype="<i2")])
    assert len({len(enc.encode(f)) for f in frames(mixed)}) > 1


def _loss_snrs(fec: bool) -> tuple[list[float], list[float]]:
    """SNR of single lost frames rebuilt with decode_fec and with conceal.

    The reference is what the decoder gives for that frame when nothing is lost: at 32 kbit/s
    Opus codes speech parametrically (SILK/hybrid), so even a clean decode has only about 3.5 dB
    waveform SNR against the input; the question here is how close a rebuilt frame comes to it.
    """
    signal = speechlike(3.0)
    packets = _encode(signal, OpusSettings(fec=fec))
    with OpusDecoder() as dec:
        clean = pcm([dec.decode(p) for p in packets])
    with_fec, with_plc = [], []
    for lost in range(20, len(packets) - 20, 5):
        results = {}
        for mode in ("fec", "plc"):
            dec = OpusDecoder()
            out = []
            for i, p in enumerate(packets[: lost + 1]):
                if i < lost:
                    out.append(dec.decode(p))
                else:
                    out.append(dec.decode_fec(packets[i + 1]) if mode == "fec" else dec.conceal())
            results[mode] = pcm(out[-1])
            dec.close()
        ref = clean[lost * FRAME_SAMPLES : (lost + 1) * FRAME_SAMPLES]
        with_fec.append(snr_db(ref, results["fec"]))
        with_plc.append(snr_db(ref, results["plc"]))
    return with_fec, with_plc


def _encode(signal: np.ndarray, settings: OpusSettings) -> list[bytes]:
    with OpusEncoder(settings) as enc:
        return [enc.encode(f) for f in frames(signal)]


def test_fec_recovers_a_lost_frame_better_than_plc() -> None:
    fec, plc = _loss_snrs(fec=True)
    # Measured (median SNR of the rebuilt frame): FEC 15.0 dB against PLC 3.1 dB with libopus
    # 1.3.1; 13.9 against 7.5 dB with 1.6.1, whose decoder conceals better (deep PLC, LACE).
    # FEC beat PLC by more than 1 dB in 13 / 10 of the 22 lost frames; without FEC data, in none.
    assert np.median(fec) > np.median(plc) + 4.0
    assert sum(f > p + 1.0 for f, p in zip(fec, plc, strict=True)) >= 0.4 * len(fec)


def test_without_fec_data_decode_fec_is_no_better_than_plc() -> None:
    """Shows that the advantage above comes from the FEC bits in the next packet."""
    fec, plc = _loss_snrs(fec=False)
    assert abs(float(np.median(fec)) - float(np.median(plc))) < 1.0


def test_plc_returns_one_frame_even_before_any_packet() -> None:
    dec = OpusDecoder()
    assert len(dec.conceal()) == FRAME_BYTES
    packets = _encode(tone(0.2), OpusSettings())
    for p in packets:
        dec.decode(p)
    concealed = [dec.conceal() for _ in range(5)]
    assert all(len(c) == FRAME_BYTES for c in concealed)
    assert np.abs(pcm(concealed[0])).max() > 100  # it continues the tone, not silence
    assert len(dec.decode_fec(packets[-1])) == FRAME_BYTES


@pytest.mark.parametrize("size", [0, 1, 1919, 1921, 3840])
def test_wrong_pcm_length_is_a_codec_error(size: int) -> None:
    with OpusEncoder() as enc, pytest.raises(CodecError, match="1920 bytes"):
        enc.encode(bytes(size))


@pytest.mark.parametrize(
    "packet",
    [
        b"",  # empty: use conceal()
        b"\x00" * 4000,  # longer than any Opus packet
        b"\x0b",  # a valid 60 ms SILK TOC: not a 20 ms frame
        b"\x79\x00\x01\x02",  # code 1: two 20 ms frames in one packet = 40 ms
        b"\xff\xff\xff",  # code 3 with an impossible frame count
    ],
)
def test_bad_packets_are_codec_errors(packet: bytes) -> None:
    dec = OpusDecoder()
    for method in (dec.decode, dec.decode_fec):
        with pytest.raises(CodecError):
            method(packet)
    assert len(dec.conceal()) == FRAME_BYTES  # and the decoder still works


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=1500))
def test_garbage_never_crashes_the_decoder(packet: bytes) -> None:
    dec = OpusDecoder()
    try:
        out = dec.decode(packet)
    except CodecError:
        pass
    else:
        assert len(out) == FRAME_BYTES
    assert len(dec.conceal()) == FRAME_BYTES
    dec.close()


def test_close_is_idempotent_and_use_after_close_is_an_error() -> None:
    enc, dec = OpusEncoder(), OpusDecoder()
    packet = enc.encode(bytes(FRAME_BYTES))
    enc.close()
    enc.close()
    dec.close()
    dec.close()
    with pytest.raises(CodecError, match="closed"):
        enc.encode(bytes(FRAME_BYTES))
    with pytest.raises(CodecError, match="closed"):
        dec.decode(packet)
    with pytest.raises(CodecError, match="closed"):
        dec.conceal()


LEAK_CYCLES = 400
_RSS_GROWTH = """
import gc, json, os, sys
from voice.media import libopus, opus
from voice.media.opus import FRAME_BYTES, OpusDecoder, OpusEncoder

if sys.argv[1] == "forget":  # the control: close() drops the C state without freeing it
    def forget(codec):
        codec._state = None
    opus._Codec.close = forget

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def cycles(n):
    for _ in range(n):
        with OpusEncoder() as enc:  # freed by close()
            enc.encode(bytes(FRAME_BYTES))
        OpusDecoder().conceal()  # freed by __del__
    gc.collect()

cycles(50)  # warm up: the allocator's pools, libopus's tables
before = resident()
cycles(int(sys.argv[2]))
lib = libopus.load()
sizes = {"encoder": lib.opus_encoder_get_size(1), "decoder": lib.opus_decoder_get_size(1)}
print(json.dumps({"growth": resident() - before, **sizes}))
"""


def _rss_growth(mode: str) -> dict[str, int]:
    """Resident memory growth over LEAK_CYCLES encoder + decoder cycles, in a fresh process (a
    leak must not stay in this one), with the size of one encoder and one decoder state."""
    run = subprocess.run(
        [sys.executable, "-c", _RSS_GROWTH, mode, str(LEAK_CYCLES)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, int] = json.loads(run.stdout)
    return result


def test_many_codecs_are_freed() -> None:
    """Resident memory stays flat over many create / use / free cycles of both codecs (the
    encoder closed, the decoder left to ``__del__``). The control runs the same loop with
    ``close()`` dropping the C state without freeing it: memory then grows by about every state
    it forgot, so the measurement does catch a leak, even of the smaller state alone."""
    forgot = _rss_growth("forget")
    freed = _rss_growth("free")
    one_cycle = forgot["encoder"] + forgot["decoder"]
    smallest_leak = LEAK_CYCLES * min(forgot["encoder"], forgot["decoder"])
    print(
        f"{LEAK_CYCLES} cycles of {one_cycle // 1000} kB of libopus state: resident memory "
        f"+{forgot['growth'] / 1e6:.1f} MB without freeing, +{freed['growth'] / 1e6:.2f} MB freed"
    )
    assert forgot["growth"] > 0.8 * LEAK_CYCLES * one_cycle
    assert freed["growth"] < smallest_leak / 4


def test_invalid_settings_are_codec_errors() -> None:
    with pytest.raises(CodecError):
        OpusSettings(bitrate=1_000)
    with pytest.raises(CodecError):
        OpusSettings(packet_loss_perc=101)
    with pytest.raises(CodecError):
        OpusSettings(complexity=11)
    with OpusEncoder() as enc, pytest.raises(CodecError):
        enc.set_packet_loss_perc(-1)
    assert issubclass(CodecError, VoiceError) and issubclass(CodecError, ValueError)


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICE_LIBOPUS", raising=False)
    monkeypatch.setattr(libopus, "_lib", None)
    monkeypatch.setattr(libopus, "BUNDLED_LIBOPUS", Path("/nonexistent/bundled/libopus.so.0"))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "/nonexistent/libopus.so")
    with pytest.raises(CodecUnavailable, match="libopus"):
        OpusDecoder()
    assert issubclass(CodecUnavailable, VoiceError)


def _version_of(path: str) -> str:
    lib = ctypes.CDLL(path)
    lib.opus_get_version_string.restype = ctypes.c_char_p
    return str(lib.opus_get_version_string().decode())


def test_the_bundled_build_comes_first_then_the_system_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VOICE_LIBOPUS", raising=False)
    monkeypatch.setattr(libopus, "_lib", None)
    candidates = libopus.library_candidates()
    assert candidates[0] == str(libopus.BUNDLED_LIBOPUS)
    assert len(candidates) == 2
    expected = candidates[0] if libopus.bundled_build_complete() else candidates[1]
    assert libopus.library_version() == _version_of(expected)


def test_voice_libopus_names_the_only_library_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_LIBOPUS", "/nonexistent/chosen/libopus.so.0")
    assert libopus.library_candidates() == ["/nonexistent/chosen/libopus.so.0"]
    monkeypatch.setattr(libopus, "_lib", None)
    with pytest.raises(CodecUnavailable, match="/nonexistent/chosen"):
        OpusDecoder()


def _system_libopus() -> str:
    """The absolute path of the system's libopus (a bare "libopus.so.0" would be matched by
    SONAME against a libopus already loaded in the process, i.e. our own build)."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True)
    for line in listing.stdout.splitlines():
        if line.strip().startswith("libopus.so.0 ") and "=>" in line:
            return line.split("=>", 1)[1].strip()
    pytest.fail("no system libopus.so.0 in ldconfig's cache (setup installs libopus0)")


def test_the_system_library_still_works_as_the_fallback() -> None:
    """What a machine gets when the 1.6.1 build fails: the binding, FEC, PLC and a lossy call
    on the system's libopus, in fresh processes so that nothing else is loaded."""
    system = _system_libopus()
    env = {**os.environ, "VOICE_LIBOPUS": system}
    probe = (
        "import ctypes, sys; from voice.media import opus; "
        "lib = ctypes.CDLL(sys.argv[1]); lib.opus_get_version_string.restype = ctypes.c_char_p; "
        "print(opus.library_version(), '|', lib.opus_get_version_string().decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, system], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    loaded, expected = (part.strip() for part in out.split("|"))
    assert loaded == expected, out
    tests = [
        str(Path(__file__)),
        str(Path(__file__).with_name("test_call_quality_loss.py")),
        "-k",
        "not system_library",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *tests], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_decoder_complexity_turns_on_speech_enhancement_where_libopus_has_it() -> None:
    """libopus >= 1.5 takes a decoder complexity (6 = LACE); 1.3.1 refuses it: recorded as 0."""
    with OpusDecoder() as dec:
        has_it = not opus.library_version().startswith(("libopus 1.3", "libopus 1.4"))
        assert dec.complexity == (opus.DECODER_COMPLEXITY if has_it else 0)
    with pytest.raises(CodecError):
        OpusDecoder(complexity=11)


def test_has_fec_tells_packets_with_fec_data_where_libopus_can() -> None:
    signal = speechlike(1.0)
    with_fec = _encode(signal, OpusSettings(fec=True, packet_loss_perc=10))
    without = _encode(signal, OpusSettings(fec=False))
    with OpusDecoder() as dec:
        if opus.library_version().startswith(("libopus 1.3", "libopus 1.4")):
            assert dec.has_fec(with_fec[-1]) is None  # cannot tell: counted as recovered
            return
        # libopus adds FEC data after active speech only (26 of these 45 packets).
        assert sum(bool(dec.has_fec(p)) for p in with_fec[5:]) >= 0.3 * len(with_fec[5:])
        assert not any(dec.has_fec(p) for p in without)
        with pytest.raises(CodecError):
            dec.has_fec(b"")
