"""Offline measurement behind the bitrate ladder (docs/media.md, "Bitrate ladder").

No network: the speech sample (twice, ~8 s) is encoded at each candidate step (CBR, in-band FEC,
a given expected loss), packets are dropped by a seeded loss model from ``voice.media.loss``, and
the receiver's rule is applied: a lost packet is rebuilt from the FEC in the next packet if that
one arrived, else concealed (PLC). The result is scored with PESQ-WB against the input.

RED (RFC 2198) is measured the same way, as the alternative use of the same bytes: a packet of
the step's size carries the primary frame and copies of the ``red`` frames before it (4 bytes of
header per copy, 1 for the primary), so each frame is coded at about a ``1 / (red + 1)`` share
of the step, without FEC; a lost frame is decoded from the first later packet that arrived
within ``red`` packets, else concealed.

    .venv/bin/python -m bench.ladder_offline            # ~3 min, 3 seeds
    .venv/bin/python -m bench.ladder_offline --seeds 1  # quicker
    VOICE_LIBOPUS=/path/to/dred/libopus.so.0 .venv/bin/python -m bench.ladder_offline --dred

``--dred`` adds Opus DRED (libopus 1.5+'s deep redundancy) on top of FEC at the upper steps; it
needs a libopus configured with ``--enable-dred`` (ours is built without it,
scripts/build-libopus.sh). Then a lost frame is rebuilt from FEC when the next packet arrived,
else from the DRED of the first later packet that arrived, else concealed (as ``opus_demo``).

Prints a table (mean PESQ-WB over seeds) and writes ``bench/results/ladder_offline.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import write_results
from voice.audio.quality import compare
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav
from voice.media import libopus
from voice.media.loss import GilbertElliott, LossModel, RandomLoss
from voice.media.opus import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    OpusDecoder,
    OpusEncoder,
    OpusSettings,
    library_version,
)

RESULTS = Path(__file__).resolve().parent / "results" / "ladder_offline.json"
BITRATES = (32_000, 40_000, 48_000, 64_000)
SET_DRED_DURATION = 4050  # opus_defines.h, libopus >= 1.5; in 10 ms frames


@dataclass(frozen=True)
class Condition:
    """A named, seeded loss pattern (None: lossless)."""

    name: str
    model: Callable[[int], LossModel] | None


CONDITIONS = (
    Condition("0 %", None),
    Condition("5 % random", lambda seed: RandomLoss(0.05, seed=seed)),
    Condition("10 % random", lambda seed: RandomLoss(0.10, seed=seed)),
    Condition("GE 5 %, bursts 3", lambda seed: GilbertElliott.from_mean(0.05, 3.0, seed=seed)),
)


@dataclass(frozen=True)
class Config:
    """One encoder configuration: a ladder step candidate."""

    bitrate: int
    bandwidth: str  # "wideband" | "superwideband"
    expected_loss: int  # OPUS_SET_PACKET_LOSS_PERC
    red: int = 0  # RFC 2198 copies of earlier frames per packet (0: plain Opus)
    dred_frames: int = 0  # DRED duration in 10 ms frames (0: none)
    fec: bool = True
    reach: int = 50  # DRED: how many packets after a lost one the receiver may wait for

    @property
    def label(self) -> str:
        if self.red:
            return f"{self.bitrate // 1000}k RED x{self.red}"
        if self.dred_frames:
            fec = f"exp{self.expected_loss}" if self.fec else f"noFEC exp{self.expected_loss}"
            wait = f" wait{self.reach}" if self.reach < 50 else ""
            return f"{self.bitrate // 1000}k {fec}+DRED{self.dred_frames * 10}{wait}"
        bw = "WB" if self.bandwidth == "wideband" else "SWB"
        return f"{self.bitrate // 1000}k {bw} exp{self.expected_loss}"

    @property
    def frame_bytes(self) -> int:
        """Bytes of one Opus frame: the whole packet, or its share beside the RED copies."""
        packet = self.bitrate * 20 // 8000
        return (packet - 1 - 4 * self.red) // (self.red + 1) if self.red else packet


def speech_frames(repeats: int = 2) -> list[bytes]:
    """The speech sample, ``repeats`` times, as 20 ms frames (last one zero-padded)."""
    pcm = np.tile(load_wav(speech_sample()), repeats).astype("<i2").tobytes()
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def encode(frames: Sequence[bytes], config: Config) -> list[bytes]:
    """Encode every frame; asserts what the ladder relies on: one packet size per step."""
    settings = OpusSettings(
        bitrate=config.frame_bytes * 400,
        packet_loss_perc=config.expected_loss,
        fec=config.fec,
        max_bandwidth=config.bandwidth,  # type: ignore[arg-type]
    )
    with OpusEncoder(settings) as enc:
        if config.dred_frames:
            enc._ctl(SET_DRED_DURATION, config.dred_frames)  # not in the client's binding
        packets = [enc.encode(f) for f in frames]
    sizes = {len(p) for p in packets}
    assert sizes == {config.frame_bytes}, f"{config.label}: sizes {sizes}"
    return packets


def receive(packets: Sequence[bytes], lost: Sequence[bool], red: int = 0) -> bytes:
    """What the receiver plays: the frame itself, or a RED copy of it from one of the ``red``
    packets after it, or FEC from the next packet when it arrived, else PLC."""
    out: list[bytes] = []
    with OpusDecoder() as dec:
        for i, packet in enumerate(packets):
            if not lost[i] or any(not x for x in lost[i + 1 : i + 1 + red]):
                out.append(dec.decode(packet))
            elif i + 1 < len(packets) and not lost[i + 1]:
                out.append(dec.decode_fec(packets[i + 1]))
            else:
                out.append(dec.conceal())
    return b"".join(out)


class Dred:
    """The DRED decoding calls (libopus >= 1.5 built with ``--enable-dred``), via ctypes."""

    def __init__(self) -> None:
        self.lib = lib = libopus.load()
        if not hasattr(lib, "opus_dred_parse"):
            raise SystemExit(f"{library_version()} has no DRED API: set VOICE_LIBOPUS")
        p, i32, errp = ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_int)
        lib.opus_dred_decoder_create.argtypes, lib.opus_dred_decoder_create.restype = [errp], p
        lib.opus_dred_alloc.argtypes, lib.opus_dred_alloc.restype = [errp], p
        lib.opus_dred_parse.argtypes = [p, p, ctypes.c_char_p, i32, i32, i32, errp, ctypes.c_int]
        lib.opus_dred_parse.restype = ctypes.c_int
        lib.opus_decoder_dred_decode.argtypes = [p, p, i32, ctypes.POINTER(ctypes.c_int16), i32]
        lib.opus_decoder_dred_decode.restype = ctypes.c_int
        err = ctypes.c_int(0)
        self.decoder = lib.opus_dred_decoder_create(ctypes.byref(err))
        self.state = lib.opus_dred_alloc(ctypes.byref(err))
        if not self.decoder or not self.state:
            raise SystemExit(f"DRED set-up failed: {err.value}")
        self.pcm = (ctypes.c_int16 * FRAME_SAMPLES)()

    def rebuild(self, dec: OpusDecoder, later: bytes, frames_before: int) -> bytes | None:
        """The frame ``frames_before`` frames before the packet ``later``, from its DRED."""
        offset = frames_before * FRAME_SAMPLES
        end = ctypes.c_int(0)
        got = self.lib.opus_dred_parse(
            self.decoder, self.state, later, len(later), offset, SAMPLE_RATE, ctypes.byref(end), 0
        )
        if got <= 0:  # as opus_demo: any DRED at all; beyond its reach libopus conceals
            return None
        n = self.lib.opus_decoder_dred_decode(
            dec._live(), self.state, offset, self.pcm, FRAME_SAMPLES
        )
        return bytes(self.pcm) if n == FRAME_SAMPLES else None


def receive_dred(packets: Sequence[bytes], lost: Sequence[bool], dred: Dred, reach: int) -> bytes:
    """FEC from the next packet when it arrived, else DRED from the first later one (at most
    ``reach`` packets on: how long the jitter buffer would hold the lost frame), else PLC."""
    out: list[bytes] = []
    with OpusDecoder() as dec:
        for i, packet in enumerate(packets):
            if not lost[i]:
                out.append(dec.decode(packet))
                continue
            ahead = range(i + 1, min(len(packets), i + 1 + reach))
            later = next((j for j in ahead if not lost[j]), None)
            if later == i + 1 and dec.has_fec(packets[later]):
                out.append(dec.decode_fec(packets[later]))
                continue
            frame = None if later is None else dred.rebuild(dec, packets[later], later - i)
            out.append(dec.conceal() if frame is None else frame)
    return b"".join(out)


def score(
    frames: Sequence[bytes],
    packets: Sequence[bytes],
    cond: Condition,
    seeds: int,
    red: int = 0,
    dred: Dred | None = None,
    reach: int = 50,
) -> tuple[float, list[float]]:
    """Mean PESQ-WB over ``seeds`` loss patterns (one run if lossless)."""
    sent = b"".join(frames)
    runs: list[float] = []
    for seed in range(1 if cond.model is None else seeds):
        model = None if cond.model is None else cond.model(seed)
        lost = [False if model is None else model.drop() for _ in packets]
        heard = (
            receive(packets, lost, red)
            if dred is None
            else receive_dred(packets, lost, dred, reach)
        )
        report = compare(sent, heard)
        assert report.pesq_wb is not None, report.note
        runs.append(report.pesq_wb)
    return statistics.fmean(runs), runs


def dred_configs() -> list[Config]:
    """DRED (200 ms) beside FEC at the upper steps, and instead of it.

    libopus sizes DRED from the expected loss (with FEC on: 3 x loss of the bitrate above
    20 kbit/s, and none if that buys fewer than 2 chunks), so at our expected 5 % it adds
    nothing; higher expected losses are what turn it on.
    """
    return [
        *(Config(b, "wideband", e, dred_frames=20) for b in (48_000, 64_000) for e in (5, 10, 20)),
        Config(64_000, "wideband", 5, dred_frames=20, fec=False),
        Config(64_000, "wideband", 10, dred_frames=20, fec=False),
        *(Config(64_000, "wideband", 5, dred_frames=20, reach=r) for r in (2, 3)),
    ]


def configs() -> list[Config]:
    """The grid: every bitrate in WB and SWB at expected loss 0 (no FEC bits), 5 % and 10 %;
    then RED in the bytes of the upper steps."""
    out: list[Config] = []
    for bitrate in BITRATES:
        for bandwidth in ("wideband", "superwideband"):
            for expected in (0, 5, 10):
                out.append(Config(bitrate, bandwidth, expected))
    out += [Config(48_000, "wideband", 0, red=1), Config(64_000, "wideband", 0, red=1)]
    out += [Config(64_000, "wideband", 0, red=2)]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dred", action="store_true", help="only DRED rows (see above)")
    args = parser.parse_args(argv)
    dred = Dred() if args.dred else None
    grid = dred_configs() if dred else configs()
    out = RESULTS.with_name("ladder_offline_dred.json") if dred else RESULTS
    frames = speech_frames()
    began = time.perf_counter()
    rows: list[dict[str, object]] = []
    names = [c.name for c in CONDITIONS]
    print(f"{library_version()}, {len(frames)} frames, {args.seeds} seeds; PESQ-WB (mean)")
    print(f"{'step':<26}" + "".join(f"{n:>18}" for n in names))
    for config in grid:
        packets = encode(frames, config)
        scores = {
            c.name: score(frames, packets, c, args.seeds, config.red, dred, config.reach)
            for c in CONDITIONS
        }
        print(f"{config.label:<26}" + "".join(f"{scores[n][0]:>18.2f}" for n in names))
        rows.append(
            {
                "bitrate": config.bitrate,
                "bandwidth": config.bandwidth,
                "expected_loss": config.expected_loss,
                "red": config.red,
                "dred_ms": config.dred_frames * 10,
                "fec": config.fec,
                "dred_reach_packets": config.reach if config.dred_frames else None,
                "opus_frame_bytes": config.frame_bytes,
                "pesq_wb": {n: round(scores[n][0], 3) for n in names},
                "pesq_wb_runs": {n: [round(x, 3) for x in scores[n][1]] for n in names},
            }
        )
    write_results(
        out,
        {
            "library": library_version(),
            "frames": len(frames),
            "seeds": args.seeds,
            "seconds": round(time.perf_counter() - began, 1),
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
