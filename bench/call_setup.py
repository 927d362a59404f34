"""Call set-up time: this client against a plain aiortc DTLS-SRTP call, in the same run.

Both run in this one process, on loopback, interleaved round by round (so machine load hits both
alike), with one clock: the event loop's (``loop.time()``, which is ``time.monotonic()``).

Measurements (each is a list over ``--calls`` calls; the table shows median and p95):

* ``dial_to_first_audio`` (our client, callee with ``auto_answer``): from just before
  ``Phone.call(peer)`` is awaited on the caller to the first decoded audio frame played out at the
  callee (``MediaSession.first_audio_at``, carried in ``Call.timings.first_audio_at``), i.e.
  the caller's voice reaching the far end. The reverse direction (the callee's voice reaching the
  caller) is reported as ``dial_to_first_audio_back``. Our calls go through a real signaling
  server on loopback (in-process ``serve_signaling``): offer, ringing, accept, answer and reveal
  are sealed envelopes routed by it, and the SRTP keys come from the committed key agreement.
* ``answer_to_first_audio`` (our client, a ringing callee): the callee's phone has rung for
  ``--ring`` seconds (a human reaction time, during which ICE and the key material are prepared),
  then from just before ``Call.accept()`` is awaited to the first decoded frame played at the
  caller (``answer_to_first_audio``: the callee's "hello" heard) and at the callee
  (``answer_to_first_audio_back``: the caller heard).
* plain aiortc (``bench.plain_aiortc.plain_aiortc_call``): dial = ``createOffer`` on the caller;
  answer = ``createAnswer`` on the callee; first audio = the first frame the callee's track
  decodes (``track.recv()`` returned). The SDP is handed over in memory (no server), which
  favours the baseline. aiortc has no ringing state: its "answer" is when the callee builds the
  answer, so ICE and DTLS all happen after it.

Targets (issue 4): our dial-to-first-audio median at most 0.5x plain aiortc's, and our
answer-to-first-audio median at most 30 ms on loopback.

    .venv/bin/python -m bench.call_setup              # 20 calls each, under a minute
    .venv/bin/python -m bench.call_setup --calls 50

Prints a table and writes bench/results/call_setup.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.plain_aiortc import loopback_only, plain_aiortc_call
from bench.report import write_results
from signaling.config import Config
from signaling.server import serve_signaling
from voice.audio.base import AudioSink, AudioSource
from voice.audio.sinks import NullSink
from voice.audio.sources import ToneSource
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.phone import Call, Phone, PhoneConfig

RESULTS = Path(__file__).resolve().parent / "results" / "call_setup.json"
MS = 1000.0


def tone_audio(_call: Call) -> tuple[AudioSource, AudioSink]:
    return ToneSource(440.0), NullSink()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median_ms": None, "p95_ms": None}
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values) * MS, 2),
        "p95_ms": round(percentile(values, 95) * MS, 2),
        "min_ms": round(min(values) * MS, 2),
        "max_ms": round(max(values) * MS, 2),
    }


@dataclass
class Samples:
    plain_dial: list[float] = field(default_factory=list)
    plain_answer: list[float] = field(default_factory=list)
    plain_dtls: list[float] = field(default_factory=list)
    dial: list[float] = field(default_factory=list)
    dial_back: list[float] = field(default_factory=list)
    dial_connected: list[float] = field(default_factory=list)
    answer: list[float] = field(default_factory=list)
    answer_back: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def wait_first_audio(call: Call, limit: float) -> float:
    """Poll the call's timings until its first audio frame was played (loop time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while call.timings.first_audio_at is None:
        if loop.time() > deadline:
            raise TimeoutError(f"no audio at {call.peer}'s peer within {limit} s")
        await asyncio.sleep(0.001)
    return call.timings.first_audio_at


async def the_call(phone: Phone, call_id: bytes, limit: float) -> Call:
    """The phone's call with ``call_id`` (auto-answered calls do not go through incoming())."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        for call in phone.calls:
            if call.call_id == call_id:
                return call
        if loop.time() > deadline:
            raise TimeoutError("the callee never saw the call")
        await asyncio.sleep(0.001)


async def our_auto_answer_call(alice: Phone, bob: Phone, s: Samples) -> None:
    loop = asyncio.get_running_loop()
    bob.auto_answer = True
    t_dial = loop.time()
    caller = await alice.call("bob")
    callee = await the_call(bob, caller.call_id, 10)
    try:
        heard_at_callee = await wait_first_audio(callee, 10)
        heard_at_caller = await wait_first_audio(caller, 10)
        s.dial.append(heard_at_callee - t_dial)
        s.dial_back.append(heard_at_caller - t_dial)
        if caller.timings.connected_at is not None:
            s.dial_connected.append(caller.timings.connected_at - t_dial)
    finally:
        await caller.hangup()
        await asyncio.wait_for(callee.wait_ended(), 10)
        await asyncio.wait_for(caller.wait_ended(), 10)


async def our_ringing_call(alice: Phone, bob: Phone, s: Samples, ring: float) -> None:
    loop = asyncio.get_running_loop()
    bob.auto_answer = False
    caller = await alice.call("bob")
    callee = await asyncio.wait_for(bob.incoming(), 10)
    try:
        await asyncio.sleep(ring)  # the user reacts; ICE and keys get ready meanwhile
        t_answer = loop.time()
        await callee.accept()
        heard_at_caller = await wait_first_audio(caller, 10)
        heard_at_callee = await wait_first_audio(callee, 10)
        s.answer.append(heard_at_caller - t_answer)
        s.answer_back.append(heard_at_callee - t_answer)
    finally:
        await caller.hangup()
        await asyncio.wait_for(callee.wait_ended(), 10)
        await asyncio.wait_for(caller.wait_ended(), 10)


async def plain_call(s: Samples) -> None:
    with loopback_only():
        timing = await plain_aiortc_call()
    s.plain_dial.append(timing.dial_to_first_audio)
    s.plain_answer.append(timing.answer_to_first_audio)
    s.plain_dtls.append(timing.dtls_connected)


async def make_phone(url: str, user: str, tmp: Path) -> Phone:
    home = tmp / user
    home.mkdir()
    config = PhoneConfig(
        server_url=url,
        user=user,
        identity=Identity.load_or_create(home / "identity.key"),
        contacts=ContactBook(home / "contacts.json"),
    )
    return await Phone.connect(config, audio=tone_audio)


async def run(calls: int, ring: float, warmup: int) -> dict[str, Any]:
    s = Samples()
    with tempfile.TemporaryDirectory() as tmp:
        async with serve_signaling(Config(port=0, http_port=0, db=":memory:")) as server:
            url = f"ws://127.0.0.1:{server.port}"
            alice = await make_phone(url, "alice", Path(tmp))
            bob = await make_phone(url, "bob", Path(tmp))
            try:
                for i in range(warmup + calls):
                    trial = Samples() if i < warmup else s
                    for name, step in (
                        ("plain", plain_call(trial)),
                        ("dial", our_auto_answer_call(alice, bob, trial)),
                        ("answer", our_ringing_call(alice, bob, trial, ring)),
                    ):
                        try:
                            await step
                        except Exception as exc:  # a failed call is a result, keep going
                            s.failures.append(f"round {i} {name}: {type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.05)
            finally:
                await alice.close()
                await bob.close()
    plain_dial = summary(s.plain_dial)
    ours_dial = summary(s.dial)
    ratio = (
        round(ours_dial["median_ms"] / plain_dial["median_ms"], 3)
        if ours_dial["median_ms"] is not None and plain_dial["median_ms"]
        else None
    )
    answer = summary(s.answer)
    return {
        "calls": calls,
        "warmup_rounds": warmup,
        "ring_s": ring,
        "ours": {
            "dial_to_first_audio": ours_dial,
            "dial_to_first_audio_back": summary(s.dial_back),
            "dial_to_connected": summary(s.dial_connected),
            "answer_to_first_audio": answer,
            "answer_to_first_audio_back": summary(s.answer_back),
        },
        "plain_aiortc": {
            "dial_to_first_audio": plain_dial,
            "answer_to_first_audio": summary(s.plain_answer),
            "dtls_connected": summary(s.plain_dtls),
        },
        "dial_ratio_median": ratio,
        "targets": {
            "dial_ratio_max": 0.5,
            "dial_ratio_met": ratio is not None and ratio <= 0.5,
            "answer_median_max_ms": 30.0,
            "answer_met": answer["median_ms"] is not None and answer["median_ms"] <= 30.0,
        },
        "failures": s.failures,
        "raw_ms": {
            name: [round(v * MS, 3) for v in getattr(s, name)]
            for name in ("plain_dial", "plain_answer", "dial", "dial_back", "answer", "answer_back")
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1min_before": round(os.getloadavg()[0], 2),
        },
    }


def print_table(r: dict[str, Any]) -> None:
    ours, plain = r["ours"], r["plain_aiortc"]
    rows = [
        (
            "dial -> first audio at callee",
            ours["dial_to_first_audio"],
            plain["dial_to_first_audio"],
        ),
        ("dial -> first audio at caller", ours["dial_to_first_audio_back"], None),
        ("dial -> connected (caller)", ours["dial_to_connected"], plain["dtls_connected"]),
        (
            "answer -> first audio at caller",
            ours["answer_to_first_audio"],
            plain["answer_to_first_audio"],
        ),
        ("answer -> first audio at callee", ours["answer_to_first_audio_back"], None),
    ]

    def cell(m: dict[str, Any] | None) -> str:
        if m is None or m["median_ms"] is None:
            return f"{'-':>17}"
        return f"{m['median_ms']:>7.1f} {m['p95_ms']:>8.1f} "

    print(f"\ncall set-up, {r['calls']} calls each, loopback (ms)")
    print(f"  {'measure':<34} {'ours: median   p95':>18}  {'plain: median   p95':>19}")
    for name, o, p in rows:
        print(f"  {name:<34} {cell(o)}   {cell(p)}")
    t = r["targets"]
    print(
        f"\n  dial ratio (median ours / plain): {r['dial_ratio_median']} "
        f"(target <= {t['dial_ratio_max']}: {'met' if t['dial_ratio_met'] else 'MISSED'})"
    )
    print(
        f"  answer -> first audio median: {ours['answer_to_first_audio']['median_ms']} ms "
        f"(target <= {t['answer_median_max_ms']}: {'met' if t['answer_met'] else 'MISSED'})"
    )
    if r["failures"]:
        print(f"  failures: {len(r['failures'])}")
        for line in r["failures"][:10]:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per measurement")
    parser.add_argument("--ring", type=float, default=0.3, help="seconds a callee rings")
    parser.add_argument("--warmup", type=int, default=2, help="rounds run but not counted")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, args.ring, args.warmup))
    print_table(result)
    write_results(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
