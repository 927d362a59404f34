"""Reading and writing WAV files (integer PCM) without the limits of the ``wave`` module.

The reader walks the RIFF chunks itself so it also accepts WAVE_FORMAT_EXTENSIBLE files and files
whose header sizes were never fixed up (a recorder that died mid-call): it takes the data that is
actually there. The writer emits the canonical 44-byte header; :class:`WavWriter` patches the sizes
after every write so the file is valid at any moment.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from voice.audio.base import SAMPLE_RATE, Int16Array
from voice.audio.resample import FloatArray, resample, to_mono
from voice.errors import AudioFormatError

_PCM = 1
_EXTENSIBLE = 0xFFFE
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF size WAVE fmt 16 fmt-fields data size
HEADER_BYTES = _HEADER.size  # 44


@dataclass(frozen=True)
class WavAudio:
    """Decoded WAV content: ``samples`` is (frames, channels), float64 on the int16 scale."""

    samples: FloatArray
    rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate


def read_wav(path: str | Path) -> WavAudio:
    """Read an integer-PCM WAV file (8, 16, 24 or 32 bit, any channel count and rate)."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFormatError(f"{path}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None  # format tag, channels, rate, bits
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data[body : body + size], path)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError(f"{path}: data chunk before fmt chunk")
            end = len(data) if size in (0, 0xFFFFFFFF) else min(body + size, len(data))
            return _decode(data[body:end], fmt, path)
        pos = body + size + (size & 1)
    raise AudioFormatError(f"{path}: no data chunk")


def _parse_fmt(body: bytes, path: str | Path) -> tuple[int, int, int, int]:
    if len(body) < 16:
        raise AudioFormatError(f"{path}: fmt chunk too short")
    tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack_from("<H", body, 24)[0]  # first two bytes of the sub-format GUID
    if tag != _PCM:
        raise AudioFormatError(f"{path}: WAV format tag {tag:#x} is not integer PCM")
    if bits not in (8, 16, 24, 32) or channels < 1 or rate < 1:
        raise AudioFormatError(f"{path}: unsupported PCM: {bits} bit, {channels} ch, {rate} Hz")
    return tag, channels, rate, bits


def _decode(raw: bytes, fmt: tuple[int, int, int, int], path: str | Path) -> WavAudio:
    _tag, channels, rate, bits = fmt
    width = bits // 8
    usable = len(raw) - len(raw) % (width * channels)
    raw = raw[:usable]
    if bits == 8:
        values = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    elif bits == 16:
        values = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    elif bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        values = ints.astype(np.float64) / 256.0
    else:
        values = np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0
    return WavAudio(samples=values.reshape(-1, channels), rate=rate)


def load_wav(path: str | Path, rate: int = SAMPLE_RATE) -> Int16Array:
    """Read a WAV file as mono int16 at ``rate`` (channels averaged, band-limited resampling)."""
    audio = read_wav(path)
    mono = resample(to_mono(audio.samples), audio.rate, rate)
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)


def wav_header(n_bytes: int, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    """The canonical 44-byte header of a 16-bit PCM WAV with ``n_bytes`` of sample data."""
    align = 2 * channels
    return _HEADER.pack(
        b"RIFF", 36 + n_bytes, b"WAVE", b"fmt ", 16, _PCM, channels, rate,
        rate * align, align, 16, b"data", n_bytes,
    )  # fmt: skip


def write_wav(path: str | Path, samples: npt.ArrayLike, rate: int = SAMPLE_RATE) -> None:
    """Write mono samples as a 16-bit PCM WAV (floats are rounded and clipped)."""
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        arr = np.clip(np.rint(arr.astype(np.float64)), -32768, 32767).astype(np.int16)
    pcm = arr.astype("<i2").tobytes()
    Path(path).write_bytes(wav_header(len(pcm), rate) + pcm)


class WavWriter:
    """Append-only 16-bit mono WAV writer whose header is correct after every ``write()``.

    Sizes are patched in place after each append and the file is flushed, so a process that dies
    mid-call still leaves a playable file. What it holds is a call's decrypted audio: it is a
    new file, the owner's alone (0600), renamed over the path, so neither an earlier file at
    the path (someone may hold it open) nor a symbolic link's target is ever written. Where a
    rename cannot replace the path (a bind-mounted file, a folder we may not write in), the
    file there is truncated and made 0600 instead, still never through a link.
    """

    def __init__(self, path: str | Path, rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        self.rate = rate
        self.data_bytes = 0
        try:
            fd = _new_private_file(self.path)
        except OSError:  # the path is a mount point, its folder not ours to write in...
            fd = _private_in_place(self.path)
        self._file: BinaryIO | None = os.fdopen(fd, "r+b")
        self._file.write(wav_header(0, rate))
        self._file.flush()

    def write(self, pcm: bytes) -> None:
        if self._file is None:
            raise ValueError("WavWriter is closed")
        f = self._file
        f.seek(0, 2)
        f.write(pcm)
        self.data_bytes += len(pcm)
        f.seek(4)
        f.write(struct.pack("<I", 36 + self.data_bytes))
        f.seek(40)
        f.write(struct.pack("<I", self.data_bytes))
        f.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None


_CREATE = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def _new_private_file(path: Path) -> int:
    """A new 0600 file renamed over ``path`` (never one that existed: whoever opened that
    earlier, while it was readable, would read this call too; nor a link's target)."""
    fresh = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(fresh, _CREATE | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.replace(fresh, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(fresh)
        raise
    return fd


def _private_in_place(path: Path) -> int:
    """``path`` itself, truncated and 0600 (not through a link)."""
    fd = os.open(path, _CREATE | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd
