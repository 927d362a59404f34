"""WAV reading accepts real-world PCM files (any rate, channels, width) and rejects the rest."""

from __future__ import annotations

import errno
import os
import stat
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voice.audio.wavfile import WavWriter, load_wav, read_wav, wav_header, write_wav
from voice.errors import AudioFormatError


def write_with_stdlib(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> None:
    """Write (frames, channels) int samples with the stdlib, independently of our writer."""
    _, channels = samples.shape
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes(samples.astype("<i2").tobytes())
        else:  # 24 bit: low three bytes of each int32
            raw = samples.astype("<i4").reshape(-1, 1).view(np.uint8)[:, :3]
            w.writeframes(raw.tobytes())


def test_write_then_read_is_exact(tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(-32768, 32768, 5000).astype(np.int16)
    write_wav(tmp_path / "a.wav", x)
    audio = read_wav(tmp_path / "a.wav")
    assert audio.rate == 48_000 and audio.channels == 1
    assert np.array_equal(audio.samples[:, 0], x.astype(np.float64))
    with wave.open(str(tmp_path / "a.wav")) as w:  # the stdlib agrees on the format
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (
            48_000, 1, 2, 5000,
        )  # fmt: skip


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    stereo = np.stack([np.full(480, 1000), np.full(480, 3000)], axis=1)
    write_with_stdlib(tmp_path / "s.wav", stereo, 48_000)
    assert np.all(load_wav(tmp_path / "s.wav") == 2000)


def test_24_bit_is_scaled_to_16_bit(tmp_path: Path) -> None:
    x = np.array([[0x123456], [-0x123456], [0x7FFFFF]])
    write_with_stdlib(tmp_path / "w24.wav", x, 48_000, width=3)
    got = read_wav(tmp_path / "w24.wav").samples[:, 0]
    assert np.allclose(got, x[:, 0] / 256)


def test_truncated_data_size_reads_what_is_there(tmp_path: Path) -> None:
    pcm = np.arange(100, dtype="<i2").tobytes()
    (tmp_path / "t.wav").write_bytes(wav_header(10_000) + pcm + b"\x01")  # claims more, odd tail
    assert np.array_equal(read_wav(tmp_path / "t.wav").samples[:, 0], np.arange(100))
    (tmp_path / "z.wav").write_bytes(wav_header(0) + pcm)  # header never patched
    assert len(read_wav(tmp_path / "z.wav").samples) == 100


def test_extensible_pcm_is_accepted(tmp_path: Path) -> None:
    guid_pcm = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 16_000, 32_000, 2, 16) + struct.pack(
        "<HHI", 22, 16, 4
    ) + guid_pcm  # fmt: skip
    pcm = np.full(16, 7, dtype="<i2").tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", len(pcm)) + pcm
    (tmp_path / "x.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    audio = read_wav(tmp_path / "x.wav")
    assert audio.rate == 16_000 and np.all(audio.samples == 7)


def test_float_wav_and_garbage_are_rejected(tmp_path: Path) -> None:
    header = bytearray(wav_header(8))
    header[20:22] = struct.pack("<H", 3)  # IEEE float
    (tmp_path / "f.wav").write_bytes(bytes(header) + bytes(8))
    with pytest.raises(AudioFormatError, match="not integer PCM"):
        read_wav(tmp_path / "f.wav")
    (tmp_path / "g.wav").write_bytes(b"ID3 this is an mp3")
    with pytest.raises(AudioFormatError, match="not a RIFF"):
        read_wav(tmp_path / "g.wav")
    (tmp_path / "n.wav").write_bytes(wav_header(0)[:36])  # fmt but no data chunk
    with pytest.raises(AudioFormatError, match="no data"):
        read_wav(tmp_path / "n.wav")


def test_writer_header_is_valid_after_every_write(tmp_path: Path) -> None:
    writer = WavWriter(tmp_path / "w.wav")
    for n in range(1, 4):
        writer.write(bytes(1920))
        with wave.open(str(tmp_path / "w.wav")) as w:  # read while still open for writing
            assert w.getnframes() == 960 * n
    writer.close()
    writer.close()
    assert writer.closed


def test_writer_keeps_the_recording_private_and_never_writes_an_old_file(tmp_path: Path) -> None:
    """A call's decrypted audio: a new 0600 file at the path. A file that was there (which
    someone may have opened while it was readable) and a link's target are left untouched."""
    fresh = WavWriter(tmp_path / "new.wav")
    fresh.close()
    assert stat.S_IMODE((tmp_path / "new.wav").stat().st_mode) == 0o600
    old = tmp_path / "old.wav"
    old.write_bytes(b"x" * 100)
    old.chmod(0o644)
    with old.open("rb") as held:  # opened while it was readable
        replaced = WavWriter(old)
        replaced.write(bytes(1920))
        replaced.close()
        assert held.read() == b"x" * 100  # sees nothing of the new recording
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    with wave.open(str(old)) as w:
        assert w.getnframes() == 960
    target = tmp_path / "elsewhere.wav"
    target.write_bytes(b"keep")
    (tmp_path / "link.wav").symlink_to(target)
    WavWriter(tmp_path / "link.wav").close()
    assert target.read_bytes() == b"keep"
    assert not (tmp_path / "link.wav").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere.wav",
        "link.wav",
        "new.wav",
        "old.wav",
    ]  # no temporary file left


def test_a_recording_that_cannot_replace_its_path_is_written_there_privately(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bind-mounted file (EBUSY) or a folder we may not write in cannot take a rename:
    the file at the path is truncated and made 0600 instead, never followed through a link."""
    path = tmp_path / "mounted.wav"
    path.write_bytes(b"x" * 100)
    path.chmod(0o644)

    def busy(src: object, dst: object) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "replace", busy)
    writer = WavWriter(path)
    writer.write(bytes(1920))
    writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with wave.open(str(path)) as w:
        assert w.getnframes() == 960
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mounted.wav"]  # no temporary
    target = tmp_path / "elsewhere.wav"
    target.write_bytes(b"keep")
    (tmp_path / "link.wav").symlink_to(target)
    with pytest.raises(OSError):
        WavWriter(tmp_path / "link.wav")
    assert target.read_bytes() == b"keep"
