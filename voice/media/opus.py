"""The Opus codec API: CBR encoding with in-band FEC, decoding with FEC, PLC (20 ms, mono).

Why our own binding (docs/opus-binding.md): PyAV cannot decode with FEC or conceal a lost
packet, and opuslib's high-level decoder cannot pass the NULL packet that asks libopus for
packet-loss concealment. This module calls the few libopus functions we need directly; which
library is loaded, and the C declarations, are :mod:`voice.media.libopus`'s job (libopus 1.6.1
built by ``scripts/build-libopus.sh``, decoders then enhance SILK speech, LACE; or the system's
1.3.1). :func:`library_version` is re-exported here.

Audio format everywhere: 48 kHz, mono, signed 16-bit little-endian PCM, 20 ms frames (960
samples, 1,920 bytes). With ``cbr=True`` every packet has exactly ``bitrate * 20 ms / 8`` bytes
(80 at 32 kbps), speech or silence alike (DTX stays off), so packet sizes reveal nothing.

Encoder and decoder hold C state: call :meth:`close` (or use them as context managers) to free
it at a known time; ``__del__`` is only the safety net. The encoder may be used from a codec
worker thread (``voice.media.clock``) while the event loop retunes it: its calls hold a lock, and
ctypes releases the GIL during each libopus call, so encoding runs in parallel with the loop.
:func:`encode_many` encodes a worker's batch of frames in one foreign call when the helper of
:mod:`voice.media.opusbatch` is built (one GIL hand-over per batch, not per frame). The decoder
is not thread-safe (the receiver uses it on the loop thread only).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

from voice.errors import CodecError
from voice.media import libopus, opusbatch
from voice.media.libopus import check, library_version

__all__ = [
    "CHANNELS",
    "DECODER_COMPLEXITY",
    "FRAME_BYTES",
    "FRAME_SAMPLES",
    "MAX_PACKET_BYTES",
    "SAMPLE_RATE",
    "OpusDecoder",
    "OpusEncoder",
    "OpusSettings",
    "encode_many",
    "library_version",
]

SAMPLE_RATE: Final = 48_000
CHANNELS: Final = 1
FRAME_SAMPLES: Final = 960
FRAME_BYTES: Final = FRAME_SAMPLES * 2
MAX_PACKET_BYTES: Final = 1_275  # one Opus frame never exceeds this (RFC 6716, 3.2.1)
# Decoder complexity 6 turns on LACE, libopus 1.5+'s speech enhancement for SILK (ignored by
# older libraries): +0.1-0.2 PESQ-WB under loss for ~35 µs more per frame (80 against 45 µs);
# 7 (NoLACE) adds only 0.05 more for another ~85 µs, which many calls in one process cannot
# afford on the event loop thread (docs/opus-binding.md, "Which libopus").
DECODER_COMPLEXITY: Final = 6


@dataclass(frozen=True)
class OpusSettings:
    """Encoder settings. ``packet_loss_perc`` > 0 is what makes libopus spend bits on FEC.

    ``bitrate`` is the bitrate ladder's clean step (voice/media/ladder.py). ``max_bandwidth``
    defaults to wideband (audio up to 8 kHz, SILK only): at 32-64 kbit/s libopus otherwise
    codes super-wideband hybrid frames and spends bits above 8 kHz that the primary speech band
    then lacks (PESQ-WB of the speech sample: 4.27 wideband vs 3.78 automatic, lossless, at
    32 kbit/s; docs/media.md, "Measured").
    """

    bitrate: int = 40_000
    cbr: bool = True
    fec: bool = True
    packet_loss_perc: int = 10
    complexity: int = 9
    application: Literal["voip"] = "voip"
    max_bandwidth: Literal["wideband", "superwideband", "fullband"] = "wideband"

    def __post_init__(self) -> None:
        if not 6_000 <= self.bitrate <= 510_000:
            raise CodecError(f"bitrate {self.bitrate} outside 6000..510000 bit/s")
        if not 0 <= self.packet_loss_perc <= 100:
            raise CodecError(f"packet_loss_perc {self.packet_loss_perc} outside 0..100")
        if not 0 <= self.complexity <= 10:
            raise CodecError(f"complexity {self.complexity} outside 0..10")
        if self.application != "voip":
            raise CodecError(f"application {self.application!r}: only 'voip' is supported")
        if self.max_bandwidth not in libopus.BANDWIDTHS:
            raise CodecError(f"max_bandwidth {self.max_bandwidth!r} unknown")


class _Codec:
    """Owns one libopus state pointer and frees it exactly once."""

    _state: int | None = None
    _destroy_name = ""
    _lib: ctypes.CDLL  # the library that made the state: only it may touch it

    def close(self) -> None:
        """Free the C state now (idempotent). Later calls raise :class:`CodecError`."""
        state, self._state = self._state, None
        if state is not None:
            getattr(self._lib, self._destroy_name)(state)

    def __del__(self) -> None:
        if not sys.is_finalizing():
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _live(self) -> int:
        if self._state is None:
            raise CodecError(f"{type(self).__name__} is closed")
        return self._state


class OpusEncoder(_Codec):
    """48 kHz mono Opus encoder for 20 ms frames."""

    _destroy_name = "opus_encoder_destroy"

    def __init__(self, settings: OpusSettings = OpusSettings()) -> None:
        self._lib = lib = libopus.load()
        err = ctypes.c_int(0)
        state = lib.opus_encoder_create(
            SAMPLE_RATE, CHANNELS, libopus.APPLICATION_VOIP, ctypes.byref(err)
        )
        check(err.value, "encoder_create")
        if not state:
            raise CodecError("opus encoder_create returned NULL")
        self._state = int(state)
        self.settings = settings
        self._lock = threading.Lock()  # one libopus call at a time on this state (loop + worker)
        self._loss_perc = settings.packet_loss_perc
        self._complexity = settings.complexity
        self._bitrate = settings.bitrate
        self._ctl(libopus.SET_BITRATE, settings.bitrate)
        self._ctl(libopus.SET_VBR, 0 if settings.cbr else 1)
        self._ctl(libopus.SET_COMPLEXITY, settings.complexity)
        self._ctl(libopus.SET_INBAND_FEC, 1 if settings.fec else 0)
        self._ctl(libopus.SET_PACKET_LOSS_PERC, settings.packet_loss_perc)
        self._ctl(libopus.SET_DTX, 0)  # DTX sends tiny packets in pauses: sizes would leak speech
        self._ctl(libopus.SET_SIGNAL, libopus.SIGNAL_VOICE)
        self._ctl(libopus.SET_MAX_BANDWIDTH, libopus.BANDWIDTHS[settings.max_bandwidth])
        self._buf = ctypes.create_string_buffer(MAX_PACKET_BYTES)

    def close(self) -> None:
        """Free the C state now (idempotent); waits for an encode running in a worker."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ failed before the lock existed
            super().close()
            return
        with lock:
            super().close()

    def _ctl(self, request: int, value: int) -> None:
        lib = self._lib
        with self._lock:
            code = lib.opus_encoder_ctl(self._live(), request, ctypes.c_int32(value))
        check(int(code), "ctl")

    def _get(self, request: int) -> int:
        out = ctypes.c_int32(0)
        with self._lock:
            code = self._lib.opus_encoder_ctl(self._live(), request, ctypes.byref(out))
        check(int(code), "ctl")
        return out.value

    @property
    def vbr(self) -> bool:
        """What libopus reports (False means hard CBR)."""
        return bool(self._get(libopus.GET_VBR))

    @property
    def dtx(self) -> bool:
        """What libopus reports (must stay False for constant packet sizes)."""
        return bool(self._get(libopus.GET_DTX))

    def set_packet_loss_perc(self, perc: int) -> None:
        """Expected loss in percent (0-100), e.g. from RTCP receiver reports; tunes FEC bits."""
        if not 0 <= perc <= 100:
            raise CodecError(f"packet loss {perc} % outside 0..100")
        self._ctl(libopus.SET_PACKET_LOSS_PERC, perc)
        self._loss_perc = perc

    @property
    def bitrate(self) -> int:
        """The bitrate in use (bit/s): ``settings.bitrate`` until :meth:`set_bitrate`."""
        return self._bitrate

    def set_bitrate(self, bitrate: int) -> None:
        """Move to another constant bitrate (the ladder, ``voice.media.ladder``); no-op if
        unchanged. With CBR the next packet, and every one after it, has ``bitrate / 400``
        bytes: the size changes here and nowhere else."""
        if not 6_000 <= bitrate <= 510_000:
            raise CodecError(f"bitrate {bitrate} outside 6000..510000 bit/s")
        if bitrate != self._bitrate:
            self._ctl(libopus.SET_BITRATE, bitrate)
            self._bitrate = bitrate

    @property
    def packet_loss_perc(self) -> int:
        """The expected loss last set (what libopus sizes its FEC data for)."""
        return self._loss_perc

    @property
    def complexity(self) -> int:
        """The encoder complexity in use (0-10; may be below ``settings.complexity``)."""
        return self._complexity

    def set_complexity(self, complexity: int) -> None:
        """Change the CPU/quality trade-off during the call (0-10); no-op if unchanged.

        The CPU governor (``voice.media.overuse``) lowers it when the process falls behind.
        """
        if not 0 <= complexity <= 10:
            raise CodecError(f"complexity {complexity} outside 0..10")
        if complexity != self._complexity:
            self._ctl(libopus.SET_COMPLEXITY, complexity)
            self._complexity = complexity

    def encode(self, pcm: bytes) -> bytes:
        """One 20 ms frame (1,920 bytes s16le) to one Opus packet."""
        if len(pcm) != FRAME_BYTES:
            raise CodecError(f"a frame is {FRAME_BYTES} bytes of s16le PCM, got {len(pcm)}")
        samples = (ctypes.c_int16 * FRAME_SAMPLES).from_buffer_copy(pcm)
        lib = self._lib
        with self._lock:
            n = lib.opus_encode(self._live(), samples, FRAME_SAMPLES, self._buf, MAX_PACKET_BYTES)
            return self._buf.raw[: check(int(n), "encode")]


class OpusDecoder(_Codec):
    """48 kHz mono Opus decoder: every call returns one 20 ms frame (1,920 bytes s16le)."""

    _destroy_name = "opus_decoder_destroy"

    def __init__(self, complexity: int = DECODER_COMPLEXITY) -> None:
        if not 0 <= complexity <= 10:
            raise CodecError(f"complexity {complexity} outside 0..10")
        self._lib = lib = libopus.load()
        err = ctypes.c_int(0)
        state = lib.opus_decoder_create(SAMPLE_RATE, CHANNELS, ctypes.byref(err))
        check(err.value, "decoder_create")
        if not state:
            raise CodecError("opus decoder_create returned NULL")
        self._state = int(state)
        self._pcm = (ctypes.c_int16 * FRAME_SAMPLES)()
        # libopus < 1.5 has no decoder complexity (OPUS_UNIMPLEMENTED): nothing to enhance.
        code = lib.opus_decoder_ctl(self._state, libopus.SET_COMPLEXITY, ctypes.c_int32(complexity))
        self.max_complexity = complexity if code == libopus.OK else 0
        self.complexity = self.max_complexity

    def set_complexity(self, complexity: int) -> None:
        """Lower (or restore) the decoder's complexity, capped at :attr:`max_complexity`.

        Below 5 libopus 1.5+ neither enhances speech nor runs deep PLC (cheaper under load);
        with a library that has no decoder complexity this does nothing.
        """
        if not 0 <= complexity <= 10:
            raise CodecError(f"complexity {complexity} outside 0..10")
        complexity = min(complexity, self.max_complexity)
        if complexity != self.complexity:
            args = (self._live(), libopus.SET_COMPLEXITY, ctypes.c_int32(complexity))
            check(int(self._lib.opus_decoder_ctl(*args)), "decoder_ctl")
            self.complexity = complexity

    def decode(self, packet: bytes) -> bytes:
        """Decode one received 20 ms packet."""
        return self._decode(self._checked(packet), fec=False)

    def decode_fec(self, next_packet: bytes) -> bytes:
        """Rebuild the LOST frame before ``next_packet`` from the FEC data it carries.

        If ``next_packet`` has no FEC data libopus conceals instead. Decode ``next_packet``
        itself afterwards as usual.
        """
        return self._decode(self._checked(next_packet), fec=True)

    def has_fec(self, packet: bytes) -> bool | None:
        """Whether ``packet`` carries FEC data for the frame before it (None: libopus < 1.5
        cannot tell). Without it :meth:`decode_fec` conceals, so the receiver counts that as
        concealment, not recovery."""
        has_lbrr = getattr(self._lib, "opus_packet_has_lbrr", None)
        if has_lbrr is None:
            return None
        data = self._checked(packet)
        return bool(check(int(has_lbrr(data, len(data))), "packet parse"))

    def conceal(self) -> bytes:
        """Packet-loss concealment (a NULL packet to libopus): one 20 ms frame."""
        return self._decode(None, fec=False)

    def _checked(self, packet: bytes) -> bytes:
        if not isinstance(packet, bytes | bytearray) or not 0 < len(packet) <= MAX_PACKET_BYTES * 3:
            raise CodecError("an Opus packet is 1 to 3825 bytes; use conceal() for a lost one")
        data = packet if type(packet) is bytes else bytes(packet)
        n = int(self._lib.opus_packet_get_nb_samples(data, len(data), SAMPLE_RATE))
        if check(n, "packet parse") != FRAME_SAMPLES:
            raise CodecError(f"expected a 20 ms packet ({FRAME_SAMPLES} samples), got {n} samples")
        return data

    def _decode(self, packet: bytes | None, *, fec: bool) -> bytes:
        size = 0 if packet is None else len(packet)
        args: list[Any] = [self._live(), packet, size, self._pcm, FRAME_SAMPLES, int(fec)]
        n = check(int(self._lib.opus_decode(*args)), "decode")
        if n != FRAME_SAMPLES:
            raise CodecError(f"opus decoded {n} samples instead of {FRAME_SAMPLES}")
        return bytes(self._pcm)


def encode_many(
    jobs: Sequence[tuple[OpusEncoder, bytes]],
) -> tuple[list[bytes | CodecError], float]:
    """Encode every ``(encoder, frame)`` as ``encoder.encode(frame)`` would, in order.

    Returns the packets (a failing frame, e.g. of a closed encoder, gets its
    :class:`CodecError` in its place; the others are still encoded) and the seconds spent
    encoding. Why: with the batch helper (:mod:`voice.media.opusbatch`) the frames go to libopus
    in one foreign call, so a codec worker gives up the GIL and waits to win it back from the
    event loop once per batch instead of once per frame. Every encoder's lock is held for the
    whole call (each taken once, in one global order, so two workers cannot deadlock): no ctl
    and no ``close()`` touches a state while C uses it, and closed states never reach C.
    """
    helper = opusbatch.load()
    if helper is None or not jobs or any(e._lib is not jobs[0][0]._lib for e, _ in jobs):
        return _encode_each(jobs)
    lib = jobs[0][0]._lib
    out: list[bytes | CodecError | None] = [None] * len(jobs)
    locks = {id(encoder._lock): encoder._lock for encoder, _ in jobs}
    with contextlib.ExitStack() as held:
        for key in sorted(locks):
            held.enter_context(locks[key])
        live: list[tuple[int, int]] = []  # (index in jobs, state)
        for i, (encoder, pcm) in enumerate(jobs):
            if len(pcm) != FRAME_BYTES:
                out[i] = CodecError(f"a frame is {FRAME_BYTES} bytes of s16le PCM, got {len(pcm)}")
            elif encoder._state is None:
                out[i] = CodecError(f"{type(encoder).__name__} is closed")
            else:
                live.append((i, encoder._state))
        n = len(live)
        states = (ctypes.c_void_p * n)(*(state for _, state in live))
        pcm = b"".join(jobs[i][1] for i, _ in live)
        packets = ctypes.create_string_buffer(n * MAX_PACKET_BYTES)
        sizes = (ctypes.c_int32 * n)()
        encode = ctypes.cast(lib.opus_encode, ctypes.c_void_p)
        args = (encode, n, states, pcm, FRAME_SAMPLES, packets, MAX_PACKET_BYTES, sizes)
        nanoseconds = int(helper(*args)) if n else 0
    view = memoryview(packets)
    for k, (i, _) in enumerate(live):
        try:
            size = check(int(sizes[k]), "encode")
        except CodecError as exc:
            out[i] = exc
            continue
        start = k * MAX_PACKET_BYTES
        out[i] = bytes(view[start : start + size])
    return [item if item is not None else CodecError("not encoded") for item in out], (
        nanoseconds / 1e9
    )


def _encode_each(
    jobs: Sequence[tuple[OpusEncoder, bytes]],
) -> tuple[list[bytes | CodecError], float]:
    """The per-frame path (no helper): one libopus call, and one GIL hand-over, per frame."""
    began = time.perf_counter()
    out: list[bytes | CodecError] = []
    for encoder, pcm in jobs:
        try:
            out.append(encoder.encode(pcm))
        except CodecError as exc:
            out.append(exc)
    return out, time.perf_counter() - began
