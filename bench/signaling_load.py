"""Signaling server load: logged-in clients held, memory per connection, and routed envelopes
per second with p50/p99 latency and CPU per envelope while all those clients stay connected;
for one instance alone and for 1, 2, 4 instances sharing a Redis (issue 15).

Each instance runs as a separate process (``python -m signaling``, one SQLite registry file in a
temp dir); with ``--instances`` greater than one (or ``--redis``) they share a redis-server this
script starts. This process is the load generator, its clients lean ones
(:mod:`bench.leanclient`: the same protocol as a phone, a fraction of its CPU). Clients are
spread round robin over the instances, and every sender's receiver is on the *next* instance,
so with several instances every envelope crosses the bus (the worst case). Deployments of
several instances then route again with each receiver on its sender's instance: the same
processes and Redis, no envelope on the bus, so that what the bus costs shows apart from what
more processes on the same cores cost. RLIMIT_NOFILE is raised to :data:`NOFILE`
(as root; otherwise to its hard limit), for this process and the ones it starts.

    .venv/bin/python -m bench.signaling_load                          # one instance, no Redis
    .venv/bin/python -m bench.signaling_load --instances 1,2,4 --clients 4000 --duration 5
    .venv/bin/python -m bench.signaling_load --hold 100000            # idle clients, 4 instances

``--hold N`` alone measures only the idle clients: N names are registered first (returning
users), then load worker processes (``--hold-per-worker`` clients each) log them in to 4
instances, round robin, and everything holds for ``--hold-seconds`` while the CPU of the
instances and workers is read. Every client dials 127.0.0.1, so each instance's port can take
one client per ephemeral port (the kernel's ``ip_local_port_range``, about 28,000): 4
instances, about 112,000 from one source address.

``BENCH_PROFILE=DIR`` runs every instance under cProfile (one ``.prof`` file each in DIR).

Prints a table and writes bench/results/signaling_load.json (``--out``); a run updates only its
own parts of an existing file (``runs`` or ``hold``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import itertools
import json
import os
import platform
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from bench.leanclient import LeanClient
from signaling.config import Config
from signaling.registry_open import open_registry
from voice.errors import RequestRefused
from voice.net.client import KEEPALIVE_INTERVAL, SignalingClient

RESULTS = Path(__file__).resolve().parent / "results" / "signaling_load.json"
NOFILE = 1 << 17  # open files per process, if we may raise the hard limit (root)


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to NOFILE if allowed (root), else the soft limit to the hard one;
    the processes started from here inherit it. The soft limit that results."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        if hard != resource.RLIM_INFINITY and hard < NOFILE:
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def hold_key(i: int) -> SigningKey:
    """Idle client ``i``'s key: the same in the process that registers it and in its worker."""
    return SigningKey(hashlib.sha256(f"bench-hold-{i}".encode()).digest())


def register_hold_users(db: str, n: int) -> float:
    """Register the idle clients' names beforehand (returning users, not new ones: holding
    them is measured, not registering them); the seconds it took."""
    started = time.perf_counter()
    registry = open_registry(db)
    try:
        for i in range(n):
            registry.claim(f"h{i:06d}", bytes(hold_key(i).verify_key))
    finally:
        registry.close()
    return time.perf_counter() - started


def port_range() -> int:
    """How many ephemeral ports one source address has per destination."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(high) - int(low) + 1


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


def wakeups(pid: int) -> int:
    """How often ``pid`` slept and was woken (voluntary context switches): an event loop's
    passes, near enough; what batching saves shows here first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise RuntimeError("no voluntary_ctxt_switches")


def busy_cores_seconds() -> float:
    """CPU seconds every core of this machine spent busy so far (``/proc/stat``): what the
    instances, Redis and the load generator did not use of it was another process's."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    path = os.path.join(tmp, "redis.sock")
    args = ["redis-server", "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--maxclients", "1000"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    return proc, f"unix://{path}"


def start_server(
    clients: int,
    tmp: str,
    redis: str = "",
    handshakes: int = 4096,
    per_ip: int = 0,
    settings: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int, int]:
    """One instance for ``clients``; ``per_ip``: connections from one address on all the
    instances together (every client comes from 127.0.0.1), by default ``clients``;
    ``settings``: more VOICE_SIGNALING_* variables."""
    port, http_port = free_port(), free_port()
    env = {
        "VOICE_SIGNALING_REDIS": redis,
        "VOICE_SIGNALING_SERVER_ID": "bench-deployment-000001",
        **os.environ,
        "VOICE_SIGNALING_PORT": str(port),
        "VOICE_SIGNALING_HTTP_PORT": str(http_port),
        "VOICE_SIGNALING_DB": os.path.join(tmp, "registry.sqlite3"),
        "VOICE_SIGNALING_MAX_CONNECTIONS": str(max(per_ip, clients) + 100),
        "VOICE_SIGNALING_MAX_CONNECTIONS_PER_IP": str(max(per_ip, clients) + 100),
        "VOICE_SIGNALING_RATE": "100000",
        "VOICE_SIGNALING_BURST": "100000",
        "VOICE_SIGNALING_MAX_QUEUE": "256",
        "VOICE_SIGNALING_LOGIN_TIMEOUT": "60",
        # One address registers every client, on all the instances together (they share the
        # registration allowances through the registry): open them wide.
        "VOICE_SIGNALING_REGISTRATION_IP_BURST": str(max(per_ip, clients) + 100),
        "VOICE_SIGNALING_REGISTRATION_BURST": str(max(per_ip, clients) + 100),
        "VOICE_SIGNALING_MAX_HANDSHAKES": str(handshakes),  # logins in flight, one address
        "VOICE_SIGNALING_LOG_LEVEL": os.environ.get("BENCH_LOG", "WARNING"),
        **{f"VOICE_SIGNALING_{k.upper()}": v for k, v in (settings or {}).items()},
    }
    command = [sys.executable, "-m", "signaling"]
    profile_dir = os.environ.get("BENCH_PROFILE")  # cProfile each instance into this directory
    if profile_dir:
        out = os.path.join(profile_dir, f"instance-{port}.prof")
        command[1:1] = ["-m", "cProfile", "-o", out]
    proc = subprocess.Popen(command, env=env)
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


async def connect_all(
    urls: list[str], n: int, concurrency: int, first: int = 0
) -> tuple[list[LeanClient], float]:
    """Client ``i`` logs in to ``urls[i % len(urls)]`` (:mod:`bench.leanclient`: the real
    login, then a fraction of a phone's CPU per envelope, left to the instances under test)."""
    gate = asyncio.Semaphore(concurrency)
    keys = [SigningKey.generate() for _ in range(n)]

    async def one(i: int) -> LeanClient:
        key = keys[i]
        async with gate, asyncio.timeout(60):
            return await LeanClient.connect(
                urls[i % len(urls)],
                f"u{first + i:06d}",
                bytes(key.verify_key),
                lambda m: key.sign(m).signature,
            )

    start = time.perf_counter()
    clients = await asyncio.gather(*(one(i) for i in range(n)))
    return list(clients), time.perf_counter() - start


async def keep_alive(clients: list[LeanClient], interval: float = KEEPALIVE_INTERVAL) -> None:
    """Every client pings once per ``interval``, as phones do, spread evenly over it (the
    instances answer; they ping only clients that stay silent)."""
    slices = max(1, round(interval / 0.1))
    tick = interval / slices
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for k in itertools.cycle(range(slices)):
        for client in clients[k::slices]:
            client.ping()
        next_at += tick  # on a fixed grid: time spent pinging does not stretch the period
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def route_phase(
    clients: list[LeanClient],
    pairs: int,
    window: int,
    duration: float,
    body_bytes: int,
    rate: float | None,
    server_pids: list[int],
    instances: int = 1,
    local: bool = False,
) -> dict[str, Any]:
    """``pairs`` senders each keep ``window`` sends in flight (or pace to ``rate`` in total,
    their sends spread evenly over each interval: independent clients do not send in step,
    and senders that did would hand each instance bursts of ``pairs`` to take in one wake-up).
    Sender ``k`` is on instance ``k % instances``, its receiver on the next one: every
    envelope crosses instances if there are several, and every instance sends and receives.
    ``local``: the receiver on the sender's instance (the same deployment, no envelope on
    the bus: the control that tells Redis's cost from that of more processes).
    ``server_pids``: the instances and Redis, whose CPU is counted."""
    n = instances  # client i is on instance i % n
    hop = 0 if local else 1
    senders = [clients[2 * n * k + k % n] for k in range(pairs)]
    receivers = [clients[2 * n * k + n + (k + hop) % n] for k in range(pairs)]
    latencies: list[float] = []
    delivered = 0
    # Sends refused (the server's code), unanswered (TimeoutError) or cut off by a lost
    # connection (that flow stops), by kind.
    failed: dict[str, int] = {}
    stop = asyncio.Event()
    pad = b"\x00" * max(0, body_bytes - 8)

    in_flight: set[asyncio.Future[None]] = set()

    async def sender(me: LeanClient, peer: str, interval: float | None, phase: float) -> None:
        next_at = time.perf_counter() + (interval or 0.0) * phase
        while not stop.is_set():
            if interval is not None:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                if stop.is_set():
                    return
            answer = me.send(peer, struct.pack(">d", time.perf_counter()) + pad)
            in_flight.add(answer)
            try:
                await answer
            except (RequestRefused, TimeoutError, ConnectionError) as exc:
                if not stop.is_set():
                    kind = exc.code if isinstance(exc, RequestRefused) else type(exc).__name__
                    failed[kind] = failed.get(kind, 0) + 1
                if isinstance(exc, ConnectionError):
                    return  # this connection is gone: its flow ends
            finally:
                in_flight.discard(answer)

    def received(body: str) -> None:
        nonlocal delivered
        if not stop.is_set():
            sent_at = struct.unpack(">d", base64.b64decode(body[:12])[:8])[0]
            latencies.append(time.perf_counter() - sent_at)
            delivered += 1

    for r in receivers:
        r.on_deliver = received
    # Each receiver answers its sender once, as a phone answers a caller at once (ringing):
    # a name that sent to a session is free to send to, while one that never did costs a
    # directory token per send (a user may not probe others' presence for free).
    await asyncio.gather(
        *(r.send(s.user, b"hello") for s, r in zip(senders, receivers, strict=True))
    )
    interval = None if rate is None else pairs * window / rate
    flows = [(s, r) for s, r in zip(senders, receivers, strict=True) for _ in range(window)]
    tasks = [
        asyncio.create_task(sender(s, r.user, interval, i / len(flows)))
        for i, (s, r) in enumerate(flows)
    ]
    try:
        await asyncio.sleep(1.0)  # warm-up
        latencies.clear()
        delivered = 0
        failed.clear()
        cpu0 = [cpu_seconds(pid) for pid in server_pids]
        woken0 = sum(wakeups(pid) for pid in server_pids)
        t0, own0, busy0 = time.perf_counter(), sum(os.times()[:2]), busy_cores_seconds()
        await asyncio.sleep(duration)
        elapsed = time.perf_counter() - t0
        busy = (busy_cores_seconds() - busy0) / elapsed
        per_process = [
            (cpu_seconds(pid) - c) / elapsed for pid, c in zip(server_pids, cpu0, strict=True)
        ]
        server_cpu = sum(per_process)
        woken = sum(wakeups(pid) for pid in server_pids) - woken0
        client_cpu = (sum(os.times()[:2]) - own0) / elapsed
        count, lat = delivered, sorted(latencies)
        stop.set()
        await asyncio.sleep(0.5)
        if in_flight:  # sent before the end and still unanswered 0.5 s later
            failed["unanswered_at_end"] = len(in_flight)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in receivers:
            r.on_deliver = None
    return {
        "target_rate": rate,
        "server_cpu_us_per_envelope": round(server_cpu * elapsed / max(1, count) * 1e6, 1),
        "cpu_core_fraction_by_process": [round(c, 3) for c in per_process],
        "server_wakeups_per_envelope": round(woken / max(1, count), 2),
        "envelopes_per_s": round(count / elapsed, 1),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 3),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 3),
        "server_cpu_core_fraction": round(server_cpu, 3),
        "load_client_cpu_core_fraction": round(client_cpu, 3),
        "failed_sends": dict(failed),
        # Busy CPU of the machine that none of the above used (another process; the kernel's
        # own work for the sockets partly): a large share means the figures are noisy.
        "other_cpu_core_fraction": round(max(0.0, busy - server_cpu - client_cpu), 3),
    }


async def run_deployment(args: argparse.Namespace, instances: int, redis: bool) -> dict[str, Any]:
    """``instances`` servers (sharing a Redis if ``redis``): clients held, memory, routing."""
    load_before = os.getloadavg()[0]
    per_instance = args.clients // instances + 100
    with tempfile.TemporaryDirectory() as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        pinging: asyncio.Task[None] | None = None
        try:
            url = ""
            if redis:
                redis_proc, url = start_redis(tmp)
                procs.append(redis_proc)
            servers = [
                start_server(per_instance, tmp, url, per_ip=args.clients) for _ in range(instances)
            ]
            procs += [p for p, _, _ in servers]
            await asyncio.sleep(0.5)
            base = [rss_kib(p.pid) for p, _, _ in servers]
            urls = [f"ws://127.0.0.1:{port}" for _, port, _ in servers]
            clients, connect_s = await connect_all(urls, args.clients, args.concurrency)
            pinging = asyncio.create_task(keep_alive(clients))
            logged_in = sum([(await healthz(h))["logged_in"] for _, _, h in servers])
            gc.collect()
            gc.freeze()  # the load generator's clients stay out of its own GC scans
            await asyncio.sleep(1.0)
            held = [rss_kib(p.pid) for p, _, _ in servers]
            pids = [p.pid for p in procs]
            saturated = await route_phase(
                clients,
                args.pairs,
                args.window,
                args.duration,
                args.body_bytes,
                None,
                pids,
                instances,
            )
            light = await route_phase(
                clients, 10, 1, args.duration, args.body_bytes, 200.0, pids, instances
            )
            # Paced: every deployment routes the same rate, so CPU per envelope compares
            # without the saturated run's contention for two cores with this process.
            fixed = await route_phase(
                clients, args.pairs, 1, args.duration, args.body_bytes, args.rate, pids, instances
            )
            local: dict[str, Any] = {}
            if instances > 1:  # the same deployment, every envelope staying on its instance
                local["routing_saturated_local"] = await route_phase(
                    clients, args.pairs, args.window, args.duration, args.body_bytes, None,
                    pids, instances, local=True,
                )  # fmt: skip
                local["routing_fixed_rate_local"] = await route_phase(
                    clients, args.pairs, 1, args.duration, args.body_bytes, args.rate,
                    pids, instances, local=True,
                )  # fmt: skip
            after = sum([(await healthz(h))["logged_in"] for _, _, h in servers])
            pinging.cancel()
            await asyncio.gather(*(c.close() for c in clients))
            gc.unfreeze()
        finally:
            if pinging is not None:
                pinging.cancel()
            stop_all(procs[::-1])  # the instances before their Redis
    grown = sum(held) - sum(base)
    return {
        "instances": instances,
        "redis": redis,
        "clients_requested": args.clients,
        "clients_logged_in": logged_in,
        "still_logged_in_after_routing": after,
        "connect_and_login_s": round(connect_s, 2),
        "logins_per_s": round(args.clients / connect_s, 1),
        "server_rss_base_mib": [round(b / 1024, 1) for b in base],
        "server_rss_with_clients_mib": [round(h / 1024, 1) for h in held],
        "kib_per_connection": round(grown / max(1, logged_in), 1),
        "routing_saturated": saturated,
        "routing_light_200_per_s": light,
        "routing_fixed_rate": fixed,
        **local,
        "loadavg_1min_before": round(load_before, 2),
    }


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    """As many idle, logged-in clients as 4 instances and this machine hold: load worker
    processes log in ``--hold`` clients in all, then everything stays for ``--hold-seconds``
    while the CPU that holding them costs is read."""
    instances, per_worker = 4, args.hold_per_worker
    workers_n = -(-args.hold // per_worker)
    per_instance = -(-args.hold // instances)
    # Logins in flight: half the instances' handshake slots for one address, shared out (every
    # client comes from 127.0.0.1; signaling.admission allows one address 1/16 of the slots).
    concurrency = max(1, instances * max(4, args.hold_handshakes // 16) // 2 // workers_n)
    settings = {"max_users": str(args.hold + 1000)}
    if args.hold_ping_interval is not None:
        settings["ping_interval"] = str(args.hold_ping_interval)
    with tempfile.TemporaryDirectory() as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        workers: list[subprocess.Popen[bytes]] = []
        try:
            register_s = register_hold_users(os.path.join(tmp, "registry.sqlite3"), args.hold)
            redis_proc, url = start_redis(tmp)
            procs.append(redis_proc)
            servers = [
                start_server(
                    per_instance + 100,
                    tmp,
                    url,
                    handshakes=args.hold_handshakes,  # few: descriptors for logged-in users
                    per_ip=args.hold,
                    settings=settings,
                )
                for _ in range(instances)
            ]
            procs += [p for p, _, _ in servers]
            await asyncio.sleep(0.5)
            base = [rss_kib(p.pid) for p, _, _ in servers]
            urls = ",".join(f"ws://127.0.0.1:{port}" for _, port, _ in servers)
            started = time.perf_counter()
            for w in range(workers_n):
                count = min(per_worker, args.hold - w * per_worker)
                command = [sys.executable, "-m", "bench.signaling_load", "--worker", urls]
                command += ["--clients", str(count), "--first", str(w * per_worker)]
                command += ["--concurrency", str(concurrency)]
                if args.hold_client_ping is not None:
                    command += ["--hold-client-ping", str(args.hold_client_ping)]
                workers.append(
                    subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # noqa: ASYNC220
                )
            pids = [p.pid for p in procs] + [w.pid for w in workers]
            reports = []
            for worker in workers:
                assert worker.stdout is not None
                reports.append(json.loads(worker.stdout.readline() or b"{}"))
            connect_s = time.perf_counter() - started
            login_cpu = [cpu_seconds(pid) for pid in pids]  # from start: mostly logging in
            await asyncio.sleep(2.0)
            health = [await healthz(h) for _, _, h in servers]
            t0, cpu0 = time.perf_counter(), [cpu_seconds(pid) for pid in pids]
            await asyncio.sleep(args.hold_seconds)
            elapsed = time.perf_counter() - t0
            idle_cpu = [(cpu_seconds(pid) - c) / elapsed for pid, c in zip(pids, cpu0, strict=True)]
            after = [await healthz(h) for _, _, h in servers]
            held = [rss_kib(p.pid) for p, _, _ in servers]
            limits = [server_limits(p.pid) for p, _, _ in servers]
            worker_rss = [rss_kib(w.pid) for w in workers if w.poll() is None]
        finally:
            for worker in workers:
                if worker.stdin is not None:
                    worker.stdin.close()
            stop_all([*workers, *procs[::-1]])
    logged_in = sum(int(h["logged_in"]) for h in health)
    n_servers = 1 + instances  # Redis, then the instances, then the workers
    failed: dict[str, int] = {}
    for report in reports:
        for kind, count in report.get("failed", {}).items():
            failed[kind] = failed.get(kind, 0) + count
    return {
        "requested": args.hold,
        "logged_in_per_instance": [h["logged_in"] for h in health],
        "logged_in_total": logged_in,
        "still_logged_in_after_hold": sum(int(h["logged_in"]) for h in after),
        "failed_logins_by_kind": failed,
        "load_workers": len(workers),
        "preregistration_s": round(register_s, 1),
        "connect_and_login_s": round(connect_s, 1),
        "logins_per_s": round(logged_in / connect_s, 1),
        "login_cpu_ms_per_client": {
            "instances_and_redis": round(sum(login_cpu[:n_servers]) / max(1, logged_in) * 1e3, 2),
            "load_workers": round(sum(login_cpu[n_servers:]) / max(1, logged_in) * 1e3, 2),
        },
        "holding_cpu_cores": {
            "redis": round(idle_cpu[0], 3),
            "instances": [round(c, 3) for c in idle_cpu[1:n_servers]],
            "load_workers": round(sum(idle_cpu[n_servers:]), 3),
        },
        "hold_seconds": args.hold_seconds,
        "server_ping_interval_s": args.hold_ping_interval or Config().ping_interval,
        "client_ping_interval_s": args.hold_client_ping,
        "handshake_slots_per_instance": args.hold_handshakes,
        "logins_in_flight": concurrency * len(workers),
        "server_rss_mib": [round(h / 1024, 1) for h in held],
        "kib_per_connection": round((sum(held) - sum(base)) / max(1, logged_in), 1),
        "load_worker_rss_mib": round(sum(worker_rss) / 1024, 1),
        "load_worker_kib_per_client": round(sum(worker_rss) / max(1, logged_in), 1),
        "server_open_files_limit": limits,
        "ephemeral_ports_per_destination": port_range(),
        "memory_available_mib_at_end": memory_available_mib(),
    }


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop each in turn (the instances before their Redis, which they would miss)."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_limits(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return -1


def memory_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return -1


async def worker(args: argparse.Namespace) -> None:
    """One load process of :func:`hold`: log in, print a JSON line, stay until stdin closes."""
    raise_nofile()
    gc.disable()  # thousands of long-lived clients: collections would only cost time here
    urls = args.worker.split(",")
    gate = asyncio.Semaphore(args.concurrency)
    made: list[SignalingClient] = []
    failed: dict[str, int] = {}

    async def one(i: int) -> None:
        key = hold_key(args.first + i)
        async with gate:
            try:
                made.append(
                    await SignalingClient.connect(
                        urls[i % len(urls)],
                        f"h{args.first + i:06d}",
                        bytes(key.verify_key),
                        lambda m: key.sign(m).signature,
                        open_timeout=120,
                        ping_interval=args.hold_client_ping,  # None: silent, pinged
                    )
                )
            except Exception as exc:  # counted by kind: what stopped more logins
                kind = type(exc).__name__
                failed[kind] = failed.get(kind, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.clients)))
    report = {"logged_in": len(made), "failed": failed, "s": time.perf_counter() - started}
    print(json.dumps(report), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_nofile()
    runs = []
    for round_ in range(args.repeat):  # the machine's speed drifts: every deployment each round
        for n in args.instances:
            if n == 1 and not args.redis_only:
                runs.append(await run_deployment(args, 1, redis=False) | {"round": round_})
            runs.append(await run_deployment(args, n, redis=True) | {"round": round_})
    result: dict[str, Any] = {"hold": await hold(args)} if args.hold else {}
    if not runs:
        return result
    return result | {
        "runs": runs,
        "bus_cost": bus_cost(runs),
        "settings": {
            "clients": args.clients,
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
            "loadavg_1min_after": round(os.getloadavg()[0], 2),
        },
    }


def bus_cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What an envelope that crosses the bus costs, as a ratio of CPU per envelope, by
    deployment: against one instance without Redis in the same round ("lone"), and against
    the same deployment with every envelope on its instance ("local"), saturated and paced.
    Each ratio comes from one round, so a machine that got slower or faster between rounds
    moves both sides of it; the spread over rounds is given as min, median, max."""
    lone = {r["round"]: r for r in runs if r["instances"] == 1 and not r["redis"]}
    ratios: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        if r["instances"] < 2:
            continue
        mine = ratios.setdefault(f"{r['instances']} instances", {})
        for mode, phase in (("saturated", "routing_saturated"), ("paced", "routing_fixed_rate")):
            cost = r[phase]["server_cpu_us_per_envelope"]
            if r["round"] in lone:
                base = lone[r["round"]][phase]["server_cpu_us_per_envelope"]
                mine.setdefault(f"{mode}_vs_lone", []).append(round(cost / base, 2))
            local = r[f"{phase}_local"]["server_cpu_us_per_envelope"]
            mine.setdefault(f"{mode}_vs_local", []).append(round(cost / local, 2))
    return {
        deployment: {k: {"min": min(v), "median": statistics.median(v), "max": max(v)}
                     for k, v in kinds.items()}
        for deployment, kinds in ratios.items()
    }  # fmt: skip


def print_table(r: dict[str, Any]) -> None:
    print("\nsignaling load: instances (processes), Redis, one load-generator process")
    head = (
        "deployment",
        "held",
        "KiB/conn",
        "env/s",
        "p50 ms",
        "p99 ms",
        "CPU us/env",
        "per process CPU",
    )
    print("  " + " | ".join(head))
    for run in r.get("runs", []):
        sat = run["routing_saturated"]
        name = f"{run['instances']} instance{'s' if run['instances'] > 1 else ''}"
        name += " + Redis" if run["redis"] else ", no Redis"
        cells = (
            name,
            str(run["clients_logged_in"]),
            str(run["kib_per_connection"]),
            str(sat["envelopes_per_s"]),
            str(sat["p50_ms"]),
            str(sat["p99_ms"]),
            str(sat["server_cpu_us_per_envelope"]),
            " ".join(str(c) for c in sat["cpu_core_fraction_by_process"])
            + f" (load {sat['load_client_cpu_core_fraction']}, other"
            + f" {sat['other_cpu_core_fraction']})",
        )
        print("  " + " | ".join(cells))
    print(
        "\n  paced (the same rate for every deployment): CPU us per envelope, p50/p99 ms,"
        " wake-ups per envelope"
    )
    for run in r.get("runs", []):
        fixed = run.get("routing_fixed_rate")
        if fixed:
            name = f"{run['instances']} instance{'s' if run['instances'] > 1 else ''}"
            name += " + Redis" if run["redis"] else ", no Redis"
            print(
                f"  {name} | {fixed['envelopes_per_s']}/s | {fixed['server_cpu_us_per_envelope']}"
                f" | {fixed['p50_ms']}/{fixed['p99_ms']}"
                f" | {fixed.get('server_wakeups_per_envelope', '-')} | "
                + " ".join(str(c) for c in fixed["cpu_core_fraction_by_process"])
                + f" | failed {fixed['failed_sends']}"
                + f" | other CPU {fixed['other_cpu_core_fraction']}"
            )
    print("\n  the same deployments, each envelope staying on its instance (no bus):")
    for run in r.get("runs", []):
        sat, fixed = run.get("routing_saturated_local"), run.get("routing_fixed_rate_local")
        if sat and fixed:
            print(
                f"  {run['instances']} instances + Redis | round {run.get('round', 0)}"
                f" | saturated {sat['envelopes_per_s']}/s"
                f" {sat['server_cpu_us_per_envelope']} us | paced {fixed['envelopes_per_s']}/s"
                f" {fixed['server_cpu_us_per_envelope']} us"
                f" {fixed.get('server_wakeups_per_envelope', '-')} wake-ups"
                f" | failed {fixed['failed_sends']}"
            )
    if r.get("bus_cost"):
        print("\n  CPU per crossing envelope as a ratio (min / median / max over the rounds):")
        for deployment, kinds in r["bus_cost"].items():
            ratio_cells = [
                f"{k.replace('_', ' ')} {v['min']}/{v['median']}/{v['max']}"
                for k, v in kinds.items()
            ]
            print(f"  {deployment} | " + " | ".join(ratio_cells))
    if r.get("hold"):
        h = r["hold"]
        print(
            f"\n  idle logged-in clients, 4 instances: {h['logged_in_total']} of {h['requested']} "
            f"({h['logged_in_per_instance']}), {h['still_logged_in_after_hold']} still after "
            f"{h['hold_seconds']} s; failed logins {h['failed_logins_by_kind']}\n"
            f"  logged in in {h['connect_and_login_s']} s ({h['logins_per_s']}/s; CPU ms per "
            f"login {h['login_cpu_ms_per_client']})\n"
            f"  {h['kib_per_connection']} KiB/connection in the instances "
            f"({h['server_rss_mib']} MiB), {h['load_worker_kib_per_client']} KiB/client in "
            f"the load workers; holding them costs CPU cores {h['holding_cpu_cores']}\n"
            f"  open-files limit per instance {h['server_open_files_limit']}; ephemeral ports "
            f"per destination {h['ephemeral_ports_per_destination']}; memory available at "
            f"the end {h['memory_available_mib_at_end']} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument(
        "--instances",
        type=lambda text: [int(n) for n in text.split(",")],
        default=None,
        help="comma-separated instance counts; 1 runs with and without Redis (default: 1, "
        "or none with --hold)",
    )
    parser.add_argument("--redis-only", action="store_true", help="skip one instance alone")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every deployment")
    parser.add_argument("--concurrency", type=int, default=64, help="logins in flight")
    parser.add_argument("--pairs", type=int, default=100, help="sender/receiver pairs")
    parser.add_argument("--window", type=int, default=4, help="sends in flight per sender")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    parser.add_argument("--body-bytes", type=int, default=256)
    parser.add_argument("--rate", type=float, default=1500.0, help="envelopes/s, paced phase")
    parser.add_argument("--hold", type=int, default=0, help="idle clients on 4 instances")
    parser.add_argument("--hold-per-worker", type=int, default=15_000)
    parser.add_argument("--hold-seconds", type=float, default=10.0, help="held, CPU read")
    parser.add_argument("--hold-handshakes", type=int, default=512, help="per instance")
    parser.add_argument(
        "--hold-ping-interval", type=float, default=None, help="instances' keepalive (s)"
    )
    parser.add_argument(
        "--hold-client-ping",
        type=float,
        default=None,
        help="idle clients ping every this many s (default: never, the instances ping them)",
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args))
        return
    if args.instances is None:
        args.instances = [] if args.hold else [1]
    result = asyncio.run(run(args))
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():  # keep the parts this run did not measure
        result = json.loads(args.out.read_text()) | result
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
