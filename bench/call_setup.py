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

* with and without ML-KEM (issue 16): every round also places an auto-answered call (before or
  after the other, in turns) whose two phones run key-agreement version 1 (X25519 alone)
  instead of version 2 (X25519 + ML-KEM-768, what a phone does), the same code otherwise
  (``CallAgreement(versions=(1,))``, patched in for that call only: no phone offers version 1).
  Reported: ``dial_to_first_audio`` of both, and
  the CPU time of the key agreement itself (both sides: dial, ring, both derivations; a tight
  loop, ``--kex`` runs), which is what ML-KEM adds to the critical path.
* envelope sizes: the sealed offer, ringing and reveal of a call, with the real description the
  caller's phone committed to in the first round, with and without ML-KEM, against the
  server's ``max_body_bytes`` and ``max_frame_bytes`` (the ``send`` frame carries the body in
  base64).

Targets (issue 4): our dial-to-first-audio median at most 0.5x plain aiortc's, and our
answer-to-first-audio median at most 30 ms on loopback. Issue 16: the post-quantum exchange
adds at most 2 ms to dial-to-first-audio on loopback.

    .venv/bin/python -m bench.call_setup              # 20 calls each, about a minute
    .venv/bin/python -m bench.call_setup --calls 50

Prints a table and writes bench/results/call_setup.json (the committed run is
bench/reports/call_setup.json). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
from voice.call import events as ev
from voice.call import messages as m
from voice.call.agreement import CallAgreement, Parties
from voice.crypto.contacts import ContactBook
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.crypto.replay import ReplayGuard
from voice.phone import Call, Phone, PhoneConfig
from voice.phone import media as phone_media

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
    classical_dial: list[float] = field(default_factory=list)
    classical_dial_back: list[float] = field(default_factory=list)
    paired_added: list[float] = field(default_factory=list)  # per round: with - without
    failures: list[str] = field(default_factory=list)
    description: dict[str, Any] | None = None  # the caller's, from a real call


@contextmanager
def key_agreement_versions(versions: tuple[int, ...]) -> Iterator[None]:
    """Calls placed meanwhile run these key-agreement versions on both phones (in-process)."""
    original = phone_media.CallAgreement
    phone_media.CallAgreement = functools.partial(original, versions=versions)  # type: ignore[misc]
    try:
        yield
    finally:
        phone_media.CallAgreement = original  # type: ignore[misc]


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


async def our_auto_answer_call(
    alice: Phone, bob: Phone, s: Samples, *, classical: bool = False
) -> None:
    loop = asyncio.get_running_loop()
    bob.auto_answer = True
    t_dial = loop.time()
    with key_agreement_versions((1,) if classical else (2,)):
        caller = await alice.call("bob")
        try:
            callee = await the_call(bob, caller.call_id, 10)
        except TimeoutError as exc:
            await caller.hangup()
            ended = await asyncio.wait_for(caller.wait_ended(), 10)
            dropped = {k: v for k, v in bob.dropped.items() if v}
            raise TimeoutError(f"{exc} (caller: {ended}; callee dropped: {dropped})") from None
    try:
        heard_at_callee = await wait_first_audio(callee, 10)
        heard_at_caller = await wait_first_audio(caller, 10)
        if classical:
            s.classical_dial.append(heard_at_callee - t_dial)
            s.classical_dial_back.append(heard_at_caller - t_dial)
            return
        s.dial.append(heard_at_callee - t_dial)
        s.dial_back.append(heard_at_caller - t_dial)
        if caller.timings.connected_at is not None:
            s.dial_connected.append(caller.timings.connected_at - t_dial)
        session = caller._media.session
        if s.description is None and session is not None:
            s.description = session.local_description()
    finally:
        await caller.hangup()
        await asyncio.wait_for(callee.wait_ended(), 10)
        await asyncio.wait_for(caller.wait_ended(), 10)


async def our_ringing_call(alice: Phone, bob: Phone, s: Samples, ring: float) -> None:
    loop = asyncio.get_running_loop()
    bob.auto_answer = False
    caller = await alice.call("bob")
    try:
        callee = await asyncio.wait_for(bob.incoming(), 10)
    except TimeoutError:
        await caller.hangup()
        raise
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


def kex_cpu(versions: tuple[int, ...], runs: int) -> list[float]:
    """Seconds of CPU for the whole key agreement of one call, both sides, no I/O."""
    alice, bob = Identity.generate(), Identity.generate()
    desc = {"ice": {"ufrag": "u", "pwd": "p" * 22, "candidates": []}, "ssrc": 1}
    out = []
    for _ in range(runs):
        call_id = os.urandom(16)
        t = time.process_time()
        a = CallAgreement(
            Parties(alice.public_key, "alice", bob.public_key, "bob", call_id), versions=versions
        )
        b = CallAgreement(
            Parties(bob.public_key, "bob", alice.public_key, "alice", call_id), versions=versions
        )
        dial = a.dial(desc)
        ready = b.ring(dial.offer, desc)
        assert isinstance(ready, ev.RingingReady)
        r = ready.ringing
        fx = ev.DeriveKeys(r.eph_b, r.continuity_b, desc, r.versions, r.version, r.mlkem_ct)
        assert isinstance(a.derive(fx), ev.KeysReady)
        rv = dial.reveal
        assert isinstance(b.derive(ev.DeriveKeys(rv.eph_a, rv.continuity_a, desc)), ev.KeysReady)
        out.append(time.process_time() - t)
        a.erase()
        b.erase()
    return out


def envelope_sizes(description: dict[str, Any], config: Config) -> dict[str, Any]:
    """Bytes of the sealed set-up messages (the envelope body, and the ``send`` frame that
    carries it in base64), with and without ML-KEM, against the server's limits."""
    alice, bob = Identity.generate(), Identity.generate()
    sizes: dict[str, Any] = {}
    for name, versions in (("hybrid", (2,)), ("classical", (1,))):
        call_id = os.urandom(16)
        a = CallAgreement(
            Parties(alice.public_key, "alice", bob.public_key, "bob", call_id), versions=versions
        )
        b = CallAgreement(
            Parties(bob.public_key, "bob", alice.public_key, "alice", call_id), versions=versions
        )
        dial = a.dial(description)
        ready = b.ring(dial.offer, description)
        assert isinstance(ready, ev.RingingReady)
        row = {}
        for kind, msg in (
            ("offer", dial.offer),
            ("ringing", ready.ringing),
            ("reveal", dial.reveal),
        ):
            payload = m.encode(msg)
            body = seal(alice, bob.public_key, EnvelopeHeader(call_id, 0, 0), payload)
            send = {"v": 1, "type": "send", "id": "1", "to": "bob"}
            frame = json.dumps({**send, "body": base64.b64encode(body).decode()})
            row[kind] = {"payload": len(payload), "body": len(body), "frame": len(frame)}
        sizes[name] = row
    sizes["limits"] = {
        "max_body_bytes": config.max_body_bytes,
        "max_frame_bytes": config.max_frame_bytes,
    }
    largest = max(sizes["hybrid"][k]["frame"] for k in ("offer", "ringing", "reveal"))
    sizes["fits"] = largest <= config.max_frame_bytes and all(
        sizes["hybrid"][k]["body"] <= config.max_body_bytes for k in ("offer", "ringing", "reveal")
    )
    return sizes


async def run(calls: int, ring: float, warmup: int, kex: int) -> dict[str, Any]:
    s = Samples()
    with tempfile.TemporaryDirectory() as tmp:
        async with serve_signaling(Config(port=0, http_port=0, db=":memory:")) as server:
            url = f"ws://127.0.0.1:{server.port}"
            alice = await make_phone(url, "alice", Path(tmp))
            bob = await make_phone(url, "bob", Path(tmp))
            # Each has the other as a contact it once dialed: its calls are solicited, so they
            # use the large replay memory (someone who only ever called us gets 4 calls a minute
            # in the strangers' pool, and a few rounds would exceed that).
            # And a benchmark calls far faster than people do: its phones may remember more
            # calls per sender than the 64 a minute a real phone keeps before it refuses more.
            for me, peer in ((alice, bob), (bob, alice)):
                me.config.contacts.check(peer.config.user, peer.config.identity.public_key)
                me._inbound.replay = ReplayGuard(
                    clock=me.config.hooks.clock, max_calls_per_sender=4096
                )
            try:
                for i in range(warmup + calls):
                    trial = Samples() if i < warmup else s
                    dials = [
                        ("dial", our_auto_answer_call(alice, bob, trial)),
                        ("dial classical", our_auto_answer_call(alice, bob, trial, classical=True)),
                    ]
                    if i % 2:  # with and without ML-KEM take turns going first
                        dials.reverse()
                    before = (len(trial.dial), len(trial.classical_dial))
                    for name, step in (
                        ("plain", plain_call(trial)),
                        *dials,
                        ("answer", our_ringing_call(alice, bob, trial, ring)),
                    ):
                        try:
                            await step
                        except Exception as exc:  # a failed call is a result, keep going
                            s.failures.append(f"round {i} {name}: {type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.05)
                    if (len(trial.dial), len(trial.classical_dial)) == (
                        before[0] + 1,
                        before[1] + 1,
                    ):
                        trial.paired_added.append(trial.dial[-1] - trial.classical_dial[-1])
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
    classical_dial = summary(s.classical_dial)
    added = (
        round(ours_dial["median_ms"] - classical_dial["median_ms"], 2)
        if ours_dial["median_ms"] is not None and classical_dial["median_ms"] is not None
        else None
    )
    paired = round(statistics.median(s.paired_added) * MS, 2) if s.paired_added else None
    cpu_hybrid, cpu_classical = kex_cpu((2,), kex), kex_cpu((1,), kex)
    cpu_added = round((statistics.median(cpu_hybrid) - statistics.median(cpu_classical)) * MS, 3)
    sizes = envelope_sizes(s.description, Config()) if s.description is not None else None
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
        "ml_kem": {
            "dial_to_first_audio_without": classical_dial,
            "dial_to_first_audio_back_without": summary(s.classical_dial_back),
            "dial_added_median_ms": added,  # difference of the two medians
            "dial_added_paired_median_ms": paired,  # median over rounds of (with - without)
            "kex_cpu_ms_median": {
                "with": round(statistics.median(cpu_hybrid) * MS, 3),
                "without": round(statistics.median(cpu_classical) * MS, 3),
                "runs": kex,
            },
            "kex_cpu_added_ms": cpu_added,
            "envelope_bytes": sizes,
        },
        "targets": {
            "dial_ratio_max": 0.5,
            "dial_ratio_met": ratio is not None and ratio <= 0.5,
            "answer_median_max_ms": 30.0,
            "answer_met": answer["median_ms"] is not None and answer["median_ms"] <= 30.0,
            "ml_kem_added_max_ms": 2.0,
            "ml_kem_added_met": paired is not None and paired <= 2.0 and cpu_added <= 2.0,
        },
        "failures": s.failures,
        "raw_ms": {
            name: [round(v * MS, 3) for v in getattr(s, name)]
            for name in (
                "plain_dial",
                "plain_answer",
                "dial",
                "dial_back",
                "classical_dial",
                "classical_dial_back",
                "answer",
                "answer_back",
            )
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
    k = r["ml_kem"]
    print(f"\n  with and without ML-KEM (version 2 vs version 1), {r['calls']} calls each (ms)")
    print(f"  {'measure':<34} {'with: median   p95':>18}  {'without: median   p95':>21}")
    print(
        f"  {'dial -> first audio at callee':<34} {cell(ours['dial_to_first_audio'])}   "
        f"{cell(k['dial_to_first_audio_without'])}"
    )
    print(
        f"  {'dial -> first audio at caller':<34} {cell(ours['dial_to_first_audio_back'])}   "
        f"{cell(k['dial_to_first_audio_back_without'])}"
    )
    cpu = k["kex_cpu_ms_median"]
    print(
        f"  key agreement CPU, both sides (median of {cpu['runs']}): {cpu['with']:.3f} ms with, "
        f"{cpu['without']:.3f} ms without (+{k['kex_cpu_added_ms']:.3f} ms)"
    )
    print(
        f"  ML-KEM adds {k['dial_added_paired_median_ms']} ms to dial -> first audio (median of "
        f"the per-round differences; {k['dial_added_median_ms']} between the two medians) and "
        f"{k['kex_cpu_added_ms']:.3f} ms of CPU (target <= {t['ml_kem_added_max_ms']}: "
        f"{'met' if t['ml_kem_added_met'] else 'MISSED'})"
    )
    sizes = k["envelope_bytes"]
    if sizes is not None:
        print("\n  set-up envelopes (bytes: envelope body / send frame), real description")
        for kind in ("offer", "ringing", "reveal"):
            w, wo = sizes["hybrid"][kind], sizes["classical"][kind]
            print(
                f"  {kind:<8} with ML-KEM {w['body']:>5} / {w['frame']:>5}   "
                f"without {wo['body']:>5} / {wo['frame']:>5}   "
                f"(+{w['body'] - wo['body']} / +{w['frame'] - wo['frame']})"
            )
        lim = sizes["limits"]
        print(
            f"  server limits: body {lim['max_body_bytes']}, frame {lim['max_frame_bytes']}: "
            f"{'fits' if sizes['fits'] else 'DOES NOT FIT'}"
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
    parser.add_argument("--kex", type=int, default=300, help="key agreements timed per version")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, args.ring, args.warmup, args.kex))
    print_table(result)
    write_results(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
