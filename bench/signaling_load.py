"""Signaling server load: logged-in clients held by one process, memory per connection, and
routed envelopes per second with p50/p99 latency while all those clients stay connected.

The server runs as a separate process (``python -m signaling``, SQLite registry in a temp dir);
this process is the load generator. RLIMIT_NOFILE is raised to its hard limit for both.

    .venv/bin/python bench/signaling_load.py            # ~1-2 minutes, 10,000 clients
    .venv/bin/python bench/signaling_load.py --clients 2000 --duration 5

Prints a table and writes bench/results/signaling_load.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from voice.net.client import SignalingClient

RESULTS = Path(__file__).resolve().parent / "results" / "signaling_load.json"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(clients: int, tmp: str) -> tuple[subprocess.Popen[bytes], int, int]:
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "VOICE_SIGNALING_PORT": str(port),
        "VOICE_SIGNALING_HTTP_PORT": str(http_port),
        "VOICE_SIGNALING_DB": os.path.join(tmp, "registry.sqlite3"),
        "VOICE_SIGNALING_MAX_CONNECTIONS": str(clients + 100),
        "VOICE_SIGNALING_MAX_CONNECTIONS_PER_IP": str(clients + 100),
        "VOICE_SIGNALING_RATE": "100000",
        "VOICE_SIGNALING_BURST": "100000",
        "VOICE_SIGNALING_MAX_QUEUE": "256",
        "VOICE_SIGNALING_LOGIN_TIMEOUT": "60",
        # One address registers every client: open the registration allowances wide.
        "VOICE_SIGNALING_REGISTRATION_IP_BURST": str(clients + 100),
        "VOICE_SIGNALING_REGISTRATION_BURST": str(clients + 100),
        "VOICE_SIGNALING_MAX_HANDSHAKES": "4096",  # 256 logins in flight from one address
        "VOICE_SIGNALING_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "signaling"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            return proc, port, http_port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


async def healthz(http_port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    data = await reader.read()
    writer.close()
    return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))


async def connect_all(url: str, n: int, concurrency: int) -> tuple[list[SignalingClient], float]:
    gate = asyncio.Semaphore(concurrency)
    keys = [SigningKey.generate() for _ in range(n)]

    async def one(i: int) -> SignalingClient:
        key = keys[i]
        async with gate:
            return await SignalingClient.connect(
                url,
                f"u{i:06d}",
                bytes(key.verify_key),
                lambda m: key.sign(m).signature,
                open_timeout=60,
            )

    start = time.perf_counter()
    clients = await asyncio.gather(*(one(i) for i in range(n)))
    return list(clients), time.perf_counter() - start


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def route_phase(
    clients: list[SignalingClient],
    pairs: int,
    window: int,
    duration: float,
    body_bytes: int,
    rate: float | None,
    server_pid: int,
) -> dict[str, Any]:
    """``pairs`` senders each keep ``window`` sends in flight (or pace to ``rate`` in total)."""
    senders, receivers = clients[:pairs], clients[pairs : 2 * pairs]
    latencies: list[float] = []
    delivered = 0
    stop = asyncio.Event()
    pad = b"\x00" * max(0, body_bytes - 8)

    async def sender(me: SignalingClient, peer: str, interval: float | None) -> None:
        next_at = time.perf_counter()
        while not stop.is_set():
            if interval is not None:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await me.send(peer, struct.pack(">d", time.perf_counter()) + pad)

    async def receiver(me: SignalingClient) -> None:
        nonlocal delivered
        while True:
            got = await me.receive()
            sent_at = struct.unpack(">d", got.body[:8])[0]
            if not stop.is_set():
                latencies.append(time.perf_counter() - sent_at)
                delivered += 1

    interval = None if rate is None else pairs * window / rate
    tasks = [asyncio.create_task(receiver(r)) for r in receivers]
    tasks += [
        asyncio.create_task(sender(s, r.user, interval))
        for s, r in zip(senders, receivers, strict=True)
        for _ in range(window)
    ]
    await asyncio.sleep(1.0)  # warm-up
    latencies.clear()
    delivered = 0
    cpu0, t0, own0 = cpu_seconds(server_pid), time.perf_counter(), sum(os.times()[:2])
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - t0
    server_cpu = (cpu_seconds(server_pid) - cpu0) / elapsed
    client_cpu = (sum(os.times()[:2]) - own0) / elapsed
    count, lat = delivered, sorted(latencies)
    stop.set()
    await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "target_rate": rate,
        "envelopes_per_s": round(count / elapsed, 1),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 3),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 3),
        "server_cpu_core_fraction": round(server_cpu, 3),
        "load_client_cpu_core_fraction": round(client_cpu, 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_nofile()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, http_port = start_server(args.clients, tmp)
        try:
            await asyncio.sleep(0.5)
            base_rss = rss_kib(proc.pid)
            clients, connect_s = await connect_all(
                f"ws://127.0.0.1:{port}", args.clients, args.concurrency
            )
            health = await healthz(http_port)
            gc.collect()
            gc.freeze()  # the load generator's 10k clients stay out of its own GC scans
            await asyncio.sleep(1.0)
            held_rss = rss_kib(proc.pid)
            saturated = await route_phase(
                clients, args.pairs, args.window, args.duration, args.body_bytes, None, proc.pid
            )
            paced_rate = round(saturated["envelopes_per_s"] * 0.5, -1)
            paced = await route_phase(
                clients,
                args.pairs,
                args.window,
                args.duration,
                args.body_bytes,
                paced_rate,
                proc.pid,
            )
            light = await route_phase(
                clients, 10, 1, args.duration, args.body_bytes, 200.0, proc.pid
            )
            health_after = await healthz(http_port)
            closing = time.perf_counter()
            await asyncio.gather(*(c.close() for c in clients))
            close_s = time.perf_counter() - closing
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "clients_requested": args.clients,
        "clients_logged_in": health["logged_in"],
        "still_logged_in_after_routing": health_after["logged_in"],
        "connect_and_login_s": round(connect_s, 2),
        "logins_per_s": round(args.clients / connect_s, 1),
        "server_rss_base_mib": round(base_rss / 1024, 1),
        "server_rss_with_clients_mib": round(held_rss / 1024, 1),
        "kib_per_connection": round((held_rss - base_rss) / max(1, health["logged_in"]), 1),
        "routing_saturated": saturated,
        "routing_paced_half": paced,
        "routing_light_200_per_s": light,
        "close_all_s": round(close_s, 2),
        "settings": {
            "pairs": args.pairs,
            "window": args.window,
            "duration_s": args.duration,
            "body_bytes": args.body_bytes,
            "nofile_limit": limit,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_1min_before": round(load_before, 2),  # other work on the machine
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
        },
    }


def print_table(r: dict[str, Any]) -> None:
    sat, paced = r["routing_saturated"], r["routing_paced_half"]
    light = r["routing_light_200_per_s"]
    rows = [
        ("logged-in clients held", f"{r['clients_logged_in']} of {r['clients_requested']}"),
        ("connect + login, all", f"{r['connect_and_login_s']} s ({r['logins_per_s']}/s)"),
        (
            "server RSS base -> held",
            f"{r['server_rss_base_mib']} -> {r['server_rss_with_clients_mib']} MiB",
        ),
        ("memory per connection", f"{r['kib_per_connection']} KiB"),
        (
            "routed, saturated",
            f"{sat['envelopes_per_s']}/s  p50 {sat['p50_ms']} ms  "
            f"p99 {sat['p99_ms']} ms  server CPU {sat['server_cpu_core_fraction']}",
        ),
        (
            "routed, paced at half",
            f"{paced['envelopes_per_s']}/s  p50 {paced['p50_ms']} ms  "
            f"p99 {paced['p99_ms']} ms  server CPU "
            f"{paced['server_cpu_core_fraction']}",
        ),
        (
            "routed, light (10 pairs)",
            f"{light['envelopes_per_s']}/s  p50 {light['p50_ms']} ms  "
            f"p99 {light['p99_ms']} ms  server CPU "
            f"{light['server_cpu_core_fraction']}",
        ),
        ("load client CPU (sat.)", f"{sat['load_client_cpu_core_fraction']} core"),
        ("still logged in after", str(r["still_logged_in_after_routing"])),
        ("machine load before", f"{r['machine']['loadavg_1min_before']} (1-min load average)"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nsignaling server load (one server process, one load process)")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="logins in flight")
    parser.add_argument("--pairs", type=int, default=100, help="sender/receiver pairs")
    parser.add_argument("--window", type=int, default=4, help="sends in flight per sender")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--body-bytes", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
