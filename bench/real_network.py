"""Calls over the network lab (tests/support/netlab.py): our client against plain aiortc.

Both run in the same lab and the same run, interleaved call by call, on three media paths:

* ``direct``: both hosts on public addresses (host candidates);
* ``nat``: both homes behind MASQUERADE (server-reflexive candidates, STUN from coturn);
* ``symmetric``: MASQUERADE --random-fully, where only the TURN relay works (relay candidates).

Our client is the real thing (``Phone`` in each home host, login over wss with the lab CA,
sealed offer and answer through the real signaling server, the STUN/TURN URIs and short-lived
credentials the server hands out); plain aiortc is an ``RTCPeerConnection`` in each home host
with the same STUN and TURN servers in ``RTCConfiguration.iceServers`` and its SDP passed
through this process (no server: that favours it). Per call (``bench/lab_peer.py``):

* set-up: dial (``Phone.call`` / ``createOffer`` on the caller) to the first decoded audio
  frame at the callee (processes share ``time.monotonic()``); our callee auto-answers;
* mouth-to-ear: the callee sends marks (``bench/marks.py``), timed hand-off to hand-off;
* PESQ-WB of the caller's speech at the callee;
* the path: what the client says (ours: ``MediaStats.path``; aiortc: the nominated pair) and
  what the lab's iptables counters saw (home-to-home UDP or packets to coturn's relay ports).

    sudo .venv/bin/python -m bench.real_network             # 3 calls each, about 3 minutes
    sudo .venv/bin/python -m bench.real_network --calls 10 --seconds 10

Needs root, iproute2, iptables and coturn. Prints a table and writes
bench/results/real_network.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.marks import SentMark, mouth_to_ear, percentile
from bench.peers import PeerOutput, load_output, read_message, send_message, stop
from bench.report import write_results
from signaling.turn import turn_credentials
from tests.support.netlab import TURN_IP, TURN_PORT, LabUser, NetLab, Variant, unavailable
from voice.audio.quality import compare

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "real_network.json"
PATHS: tuple[tuple[Variant, str], ...] = (
    ("direct", "host"),
    ("nat", "srflx"),
    ("symmetric", "relay"),
)
# What each path measures. "ours --relay always" on the NAT path is the price of the relay policy:
# what a call from a stranger (relay policy auto, unverified peer) costs where a direct path exists.
CLIENTS: dict[Variant, tuple[str, ...]] = {
    "direct": ("ours", "aiortc"),
    "nat": ("ours", "aiortc", "ours-relay"),
    "symmetric": ("ours", "aiortc"),
}


def _ice_servers(lab: NetLab) -> list[dict[str, Any]]:
    user, password = turn_credentials(lab.turn_secret.encode(), "bench", 3600, time.time())
    return [
        {"urls": f"stun:{TURN_IP}:{TURN_PORT}"},
        {"urls": f"turn:{TURN_IP}:{TURN_PORT}?transport=udp", "username": user,
         "credential": password},
    ]  # fmt: skip


async def _peer(
    lab: NetLab, impl: str, role: str, who: LabUser, peer: str, seconds: float, out: Path
) -> asyncio.subprocess.Process:
    relay = "always" if impl == "ours-relay" else "auto"
    impl = "ours" if impl == "ours-relay" else impl
    args = ["--impl", impl, "--role", role, "--seconds", str(seconds), "--out", str(out)]
    if impl == "ours":
        args += ["--relay", relay, "--server", lab.server_url, "--ca", str(lab.ca_path),
                 "--conf", str(who.conf), "--user", who.name, "--peer", peer]  # fmt: skip
    else:
        args += ["--ice", json.dumps(_ice_servers(lab))]
    return await lab.exec(
        who.home, sys.executable, "-m", "bench.lab_peer", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def one_call(
    lab: NetLab, impl: str, alice: LabUser, bob: LabUser, seconds: float
) -> tuple[PeerOutput, PeerOutput, dict[str, int]]:
    before = lab.counters()
    with tempfile.TemporaryDirectory() as tmp:
        outs = (Path(tmp) / "caller.npz", Path(tmp) / "callee.npz")
        callee = await _peer(lab, impl, "callee", bob, alice.name, seconds, outs[1])
        caller = await _peer(lab, impl, "caller", alice, bob.name, seconds, outs[0])
        try:
            ready = await read_message(callee, 30)
            assert ready.get("ready"), ready
            send_message(caller, {"go": True})
            if impl == "aiortc":
                send_message(callee, await read_message(caller, 30))
                send_message(caller, await read_message(callee, 30))
            for proc in (caller, callee):
                done = await read_message(proc, seconds + 90)
                assert done.get("done"), done
            result = load_output(outs[0]), load_output(outs[1])
        finally:
            await stop(caller, callee)
    after = lab.counters()
    return result[0], result[1], {k: after[k] - before.get(k, 0) for k in after}


def measure(caller: PeerOutput, callee: PeerOutput, seen: dict[str, int]) -> dict[str, Any]:
    dial = caller.extra.get("dial_at")
    first = callee.extra.get("first_audio_at")
    marks = [SentMark(i, f, t) for i, f, t in callee.marks]
    m2e = mouth_to_ear(marks, caller.heard.astype(np.float64), caller.heard_times)
    since = caller.sent_times[0] if caller.sent_times else 0.0
    keep = [i for i, t in enumerate(callee.heard_times) if t >= since]
    heard = b"".join(callee.heard[i * 960 : (i + 1) * 960].tobytes() for i in keep)
    quality = compare(caller.sent.tobytes(), heard, max_lag_s=1.5) if heard else None
    relayed = seen.get("relay_udp", 0) + seen.get("turn_udp", 0) > seen.get("peer_udp", 0)
    return {
        "setup_s": None if dial is None or first is None else first - dial,
        "m2e_median_ms": None if not m2e else 1000 * float(np.median(m2e)),
        "m2e_count": len(m2e),
        "pesq_wb": quality.pesq_wb if quality else None,
        "path_said": caller.extra.get("path"),
        "path_seen": "relay" if relayed else "peer to peer",
        "counters": seen,
    }


def summarize(calls: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key: str) -> list[float]:
        return [float(c[key]) for c in calls if c.get(key) is not None]

    setup, m2e, pesq = values("setup_s"), values("m2e_median_ms"), values("pesq_wb")
    return {
        "calls": len(calls),
        "failed": sum(1 for c in calls if c.get("error")),
        "setup_ms_median": None if not setup else 1000 * float(np.median(setup)),
        "setup_ms_p95": None if not setup else 1000 * (percentile(setup, 95) or 0.0),
        "m2e_ms_median": None if not m2e else float(np.median(m2e)),
        "pesq_wb_median": None if not pesq else float(np.median(pesq)),
        "paths_said": sorted({str(c.get("path_said")) for c in calls if "error" not in c}),
        "paths_seen": sorted({str(c.get("path_seen")) for c in calls if "error" not in c}),
    }


async def run(calls: int, seconds: float, workdir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {
        "calls_per_cell": calls,
        "call_seconds": seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "paths": {},
    }
    for variant, expected in PATHS:
        print(f"{variant} (expected path: {expected})", flush=True)
        with NetLab(variant, workdir / variant) as lab:
            alice, bob = lab.user("alice", "a"), lab.user("bob", "b")
            lab.verify(alice, bob)
            cell: dict[str, list[dict[str, Any]]] = {impl: [] for impl in CLIENTS[variant]}
            for i in range(calls):
                for impl in CLIENTS[variant]:
                    try:
                        caller, callee, seen = await one_call(lab, impl, alice, bob, seconds)
                        got = measure(caller, callee, seen)
                    except Exception as exc:  # a failed call is a result, not a crash
                        got = {"error": f"{type(exc).__name__}: {exc}"}
                    cell[impl].append(got)
                    print(f"  {impl} #{i + 1}: {_brief(got)}", flush=True)
            res["paths"][variant] = {
                "expected": expected,
                **{impl: {"summary": summarize(c), "calls": c} for impl, c in cell.items()},
            }
    return res


def _brief(got: dict[str, Any]) -> str:
    if "error" in got:
        return str(got["error"])
    return (
        f"setup {_ms(got['setup_s'], 1000)} ms, m2e {_ms(got['m2e_median_ms'])} ms, "
        f"PESQ {_ms(got['pesq_wb'], digits=2)}, said {got['path_said']}, saw {got['path_seen']}"
    )


def _ms(v: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def table(res: dict[str, Any]) -> str:
    head = (
        f"{'path':<10} {'client':<10} {'ok/calls':>8} {'set-up med':>10} {'p95':>7} "
        f"{'m2e med':>8} {'PESQ-WB':>7}  path (said / seen)"
    )
    lines = [head, "-" * len(head)]
    for variant, cell in res["paths"].items():
        for impl in CLIENTS[variant]:
            s = cell[impl]["summary"]
            lines.append(
                f"{variant:<10} {impl:<10} {s['calls'] - s['failed']:>3}/{s['calls']:<4} "
                f"{_ms(s['setup_ms_median']):>10} {_ms(s['setup_ms_p95']):>7} "
                f"{_ms(s['m2e_ms_median']):>8} {_ms(s['pesq_wb_median'], digits=2):>7}  "
                f"{', '.join(s['paths_said'])} / {', '.join(s['paths_seen'])}"
            )
    lines.append("set-up: dial to first decoded audio at the callee (ms); m2e: mouth-to-ear (ms)")
    lines.append("ours-relay: our client with --relay always (a stranger's call under relay auto)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3, help="calls per path and client")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each call")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    why = unavailable()
    if why is not None:
        raise SystemExit(f"bench.real_network: {why}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="real-network-") as tmp:
        res = asyncio.run(run(args.calls, args.seconds, Path(tmp)))
    res["benchmark_seconds"] = time.monotonic() - began
    print(table(res))
    write_results(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
