"""The impairment stage on real packets: two namespaces joined through it, numbered and
timestamped UDP both ways (tests/support/impair/probe.py), and the measured delay, jitter, loss,
bursts, reordering, duplicates and throughput compared with the configuration; then TCP, and a
server inside the forwarding namespace behind per-link stages.

The scheduler's statistics are unit-tested offline (test_impair_schedule.py); this adds that the
real path (policy routing into TUN devices, the runner, re-injection) applies them on time and
loses nothing else: the stage's own counters must equal what the receivers saw. Needs root,
iproute2 and /dev/net/tun (skipped, with the reason, otherwise).
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.impair.link import ADDR, GATEWAY, ImpairedLink
from tests.support.impair.netns import in_ns
from tests.support.impair.schedule import Counters, Profile, Scheduler
from tests.support.impair.stage import Stage, per_link, unavailable

pytestmark = [pytest.mark.netlab, pytest.mark.timeout(90)]

N, SPACING = 2000, 0.002  # per direction: 4 s at 500 packets/s
UDP_IP_HEADERS = 28
# What a busy two-core virtual machine adds. The runner is SCHED_FIFO, yet on this VM's kernel
# (PREEMPT_NONE, vCPU steal) even a bare SCHED_FIFO timer loop wakes 3-7 ms late once in a
# thousand; with other jobs filling both cores, a tenth of the packets came 5.7 ms or more
# after their planned time (the median still 0.3 ms). Delays are checked tight below (never
# early, the median on time) and with this margin above.
SLACK_MS = 8.0


@pytest.fixture(scope="module")
def link() -> Iterator[ImpairedLink]:
    why = unavailable()
    if why is not None:
        pytest.skip(f"impairment stage: {why}")
    with ImpairedLink() as lab:
        yield lab


@dataclass
class Seen:
    """What one end received: (seq, one-way delay in ms, payload bytes) in arrival order."""

    sent_by_peer: int
    packets: list[tuple[int, float, int]]

    @property
    def unique(self) -> set[int]:
        return {seq for seq, _, _ in self.packets}

    def delays(self) -> list[float]:
        first: dict[int, float] = {}
        for seq, delay, _ in self.packets:
            first.setdefault(seq, delay)
        return list(first.values())

    def loss_runs(self) -> list[int]:
        got, runs, current = self.unique, [], 0
        for seq in range(self.sent_by_peer):
            if seq not in got:
                current += 1
            elif current:
                runs.append(current)
                current = 0
        return runs

    def late(self) -> int:
        """First copies that arrive after a higher-numbered packet."""
        highest, late, seen = -1, 0, set()
        for seq, _, _ in self.packets:
            if seq in seen:
                continue
            seen.add(seq)
            late += seq < highest
            highest = max(highest, seq)
        return late


@dataclass(frozen=True)
class Probe:
    """One end of an exchange: how to run a command there, its address, how much it sends."""

    argv: list[str]
    bind: str
    count: int


def exchange(a: Probe, b: Probe, size: int = 100) -> tuple[Seen, Seen]:
    """Run both probes at once; returns what a received (from b), then what b received."""
    procs = []
    for end, peer in ((a, b), (b, a)):
        procs.append(subprocess.Popen(
            [*end.argv, sys.executable, "-m", "tests.support.impair.probe", "--bind", end.bind,
             "--peer", peer.bind, "--count", str(end.count), "--interval", str(SPACING),
             "--size", str(size), "--listen", str(max(a.count, b.count) * SPACING)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        ))  # fmt: skip
    try:
        for proc in procs:
            assert proc.stdout is not None and json.loads(proc.stdout.readline())["bound"]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            assert proc.stdout is not None
            results.append(json.loads(proc.stdout.readline()))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

    def seen(mine: dict[str, Any], theirs: dict[str, Any]) -> Seen:
        got = [(int(q), 1000 * (r - s), int(n)) for q, s, r, n in mine["received"]]
        return Seen(theirs["sent"], got)

    return seen(results[0], results[1]), seen(results[1], results[0])


def hosts(link: ImpairedLink, count_a: int, count_b: int) -> tuple[Probe, Probe]:
    return (Probe(link.argv("a"), ADDR["a"], count_a), Probe(link.argv("b"), ADDR["b"], count_b))


TCP_SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 47001))
print("listening", flush=True)
c, _ = s.accept()
c.sendall(c.recv(100) * 20_000)
c.close()
"""
TCP_CLIENT = """
import socket, sys, time
t = time.monotonic()
c = socket.create_connection((sys.argv[1], 47001), timeout=10)
connected = time.monotonic()
c.sendall(b"hello")
got = 0
while data := c.recv(65536):
    got += len(data)
print(1000 * (connected - t), got)
"""


def tcp_fetch(server: list[str], client: list[str], address: str) -> tuple[float, int]:
    """Connect over TCP, fetch 100 kB; returns (ms to connect, bytes received)."""
    proc = subprocess.Popen([*server, sys.executable, "-c", TCP_SERVER, address],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("listening")
        out = subprocess.run([*client, sys.executable, "-c", TCP_CLIENT, address],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    finally:
        proc.kill()
        proc.wait()
    connect_ms, got = out.stdout.split()
    return float(connect_ms), int(got)


def differences(before: Counters, after: Counters) -> Counters:
    return Counters(**{k: getattr(after, k) - getattr(before, k) for k in vars(after)})


def plan(profile: Profile, seed: int, n: int) -> dict[int, list[float]]:
    """What the scheduler decides for packets 0..n-1 (its delays in ms; none: lost; two: a
    duplicate), replayed offline: the fate of each packet depends only on the seed and the order
    of arrival. Spaced 1 s apart, so no packet's delay depends on another's."""
    s = Scheduler(profile, seed=seed)
    fate: dict[int, list[float]] = {i: [] for i in range(n)}
    for i in range(n):
        s.arrive(i.to_bytes(4, "big"), float(i))
        while (due := s.next_due()) is not None and due < i + 1:
            for packet in s.release(due):
                seq = int.from_bytes(packet[:4], "big")
                fate[seq].append(1000 * (due - seq))
    return fate


def test_delay_jitter_loss_bursts_reordering_and_duplicates(link: ImpairedLink) -> None:
    ab = Profile(delay_ms=40, jitter_ms=20, loss=0.10)
    ba = Profile(delay_ms=10, loss=0.05, loss_burst=3, reorder=0.05, duplicate=0.03)
    link.stage.configure({"ab": ab, "ba": ba}, seed=12)  # "ab" draws from seed 12, "ba" 13
    before = link.stage.stats()
    at_a, at_b = exchange(*hosts(link, N, N))
    stats = {d: differences(before[d], after) for d, after in link.stage.stats().items()}
    assert stats["ab"].arrived == stats["ba"].arrived == N  # only the probes' packets
    planned = {"ab": plan(ab, 12, N), "ba": plan(ba, 13, N)}

    # The stage did exactly what the scheduler decided, and nothing else.
    for direction, seen in (("ab", at_b), ("ba", at_a)):
        dropped = {seq for seq, delays in planned[direction].items() if not delays}
        doubled = {seq for seq, delays in planned[direction].items() if len(delays) == 2}
        copies = [seq for seq, _, _ in seen.packets]
        assert set(range(N)) - seen.unique == dropped, direction
        assert {seq for seq in seen.unique if copies.count(seq) == 2} == doubled, direction
        assert len(copies) == N - len(dropped) + len(doubled), direction

    # a -> b: 40 ms ± 20 ms (uniform), 10 % random loss. The plan has the configured statistics;
    # each packet arrives when planned, plus what the machine adds (never before).
    want = sorted(planned["ab"][seq][0] for seq in at_b.unique)
    d = sorted(at_b.delays())
    late = sorted(delay - planned["ab"][seq][0] for seq, delay in zip(*_first(at_b), strict=True))
    q = {p: d[int(p / 100 * (len(d) - 1))] for p in (5, 25, 50, 75, 95)}
    report = (
        f"a->b delay min {d[0]:.2f} p5 {q[5]:.2f} p25 {q[25]:.2f} median {q[50]:.2f} "
        f"p75 {q[75]:.2f} p95 {q[95]:.2f} max {d[-1]:.2f} mean {statistics.mean(d):.2f} "
        f"stdev {statistics.stdev(d):.2f} ms; later than planned: median {late[len(late) // 2]:.2f}"
        f" p75 {late[int(0.75 * len(late))]:.2f} p90 {late[int(0.9 * len(late))]:.2f} p99 "
        f"{late[int(0.99 * len(late))]:.2f} max {late[-1]:.2f} ms; {link.stage.lateness()}"
    )
    print(report)
    assert (N - len(at_b.unique)) / N == pytest.approx(0.10, abs=0.02)
    assert want[0] >= 20 and want[-1] <= 60
    for p, expected in ((5, 22), (25, 30), (50, 40), (75, 50), (95, 58)):
        assert want[int(p / 100 * (len(want) - 1))] == pytest.approx(expected, abs=1.5)
        assert expected - 1.5 <= q[p] <= expected + SLACK_MS, report
    assert late[0] >= -0.05, report  # never early
    # On time at the median: 0.3 ms on an idle machine (p90 0.25, p99 < 2 ms), 2.4 ms once in
    # CI with both cores busy; a stage that rounded due times to a coarse tick would be later.
    assert late[len(late) // 2] <= SLACK_MS / 2, report
    print(f"a->b loss {1 - len(at_b.unique) / N:.4f}; late (reordered by jitter) "
          f"{at_b.late() / N:.3f}")  # fmt: skip

    # b -> a: 10 ms, Gilbert-Elliott 5 % in bursts of 3, 5 % held back, 3 % duplicated.
    lost = N - len(at_a.unique)
    runs = at_a.loss_runs()
    duplicates = len(at_a.packets) - len(at_a.unique)
    reordered = at_a.late()
    print(f"b->a loss {lost / N:.4f} mean burst {statistics.mean(runs):.2f} duplicates "
          f"{duplicates / N:.4f} late {reordered / N:.4f}; stage {stats['ba']}")  # fmt: skip
    assert lost == stats["ba"].lost
    assert lost / N == pytest.approx(0.05, abs=0.02)
    assert statistics.mean(runs) == pytest.approx(3.0, abs=1.0)
    assert duplicates == stats["ba"].duplicated
    assert duplicates / N == pytest.approx(0.03, abs=0.012)
    held = stats["ba"].reordered
    assert reordered == pytest.approx(held, abs=0.1 * held + 2)
    assert reordered / N == pytest.approx(0.05, abs=0.02)
    on_time = sorted(at_a.delays())[: int(0.9 * len(at_a.unique))]  # without the held ones
    assert on_time[0] >= 10 - 0.05
    assert 10 <= statistics.median(on_time) <= 10 + SLACK_MS


def _first(seen: Seen) -> tuple[list[int], list[float]]:
    """Sequence numbers and delays of first copies, in arrival order."""
    firsts: dict[int, float] = {}
    for seq, delay, _ in seen.packets:
        firsts.setdefault(seq, delay)
    return list(firsts), list(firsts.values())


def test_rate_limit_caps_throughput(link: ImpairedLink) -> None:
    size = 1000  # UDP payload; 1028 bytes of IP, 4.1 Mbit/s at one per 2 ms
    link.stage.configure({"ab": Profile(rate_kbit=1000, queue_ms=100), "ba": Profile()})
    before = link.stage.stats()["ab"]
    _, seen = exchange(*hosts(link, 1000, 0), size)
    ab = differences(before, link.stage.stats()["ab"])
    times = sorted(s * SPACING * 1000 + delay for s, delay, _ in seen.packets)  # ms
    bits = 8 * (size + UDP_IP_HEADERS) * (len(times) - 1)
    kbit_s = bits / (times[-1] - times[0])
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    print(f"rate: {kbit_s:.1f} kbit/s (1000 configured), median gap {statistics.median(gaps):.3f}"
          f" ms, delivered {len(times)}/1000, tail-dropped {ab.queue_dropped}")  # fmt: skip
    assert kbit_s == pytest.approx(1000, rel=0.03)
    assert statistics.median(gaps) == pytest.approx(8.224, abs=0.5)  # 1028 bytes at 1 Mbit/s
    assert ab.queue_dropped == 1000 - len(times)
    assert ab.queue_dropped > 600


def test_tcp_crosses_the_stage(link: ImpairedLink) -> None:
    """TCP too: the kernel completes offloaded checksums before a TUN reader sees a packet."""
    link.stage.configure({"ab": Profile(delay_ms=20), "ba": Profile(delay_ms=10)})
    connect_ms, got = tcp_fetch(link.argv("b"), link.argv("a"), ADDR["b"])
    print(f"tcp: connected in {connect_ms:.1f} ms (30 configured), fetched {got} bytes")
    assert got == 100_000
    assert 30 - 0.05 <= connect_ms <= 30 + 2 * SLACK_MS


def test_access_links_and_a_local_server(link: ImpairedLink) -> None:
    """The set-up a lab with servers in its forwarding namespace needs: ``per_link`` and
    ``local=True``. The router is here both the path between a and b and the server a talks
    to. a speaks first, with empty neighbour tables, so the router must still answer a's ARP
    through the stage's rules; TCP to the local socket must pass too (see Stage, early demux).
    """
    links = {"a": ("ra", "10.199.1.0/24"), "b": ("rb", "10.199.2.0/24")}
    delays = {"up_a": 30, "down_a": 15, "up_b": 7, "down_b": 3}
    router = ["ip", "netns", "exec", link.router]
    link.stage.close()
    try:
        with Stage(link.router, per_link(links), local=True, table=200) as stage:
            stage.configure({d: Profile(delay_ms=ms) for d, ms in delays.items()})
            link.run("a", "ip", "neigh", "flush", "all")
            in_ns(link.router, "ip", "neigh", "flush", "all")
            _, up = exchange(Probe(link.argv("a"), ADDR["a"], 200), Probe(router, GATEWAY["a"], 0))
            down, _ = exchange(
                Probe(link.argv("a"), ADDR["a"], 0), Probe(router, GATEWAY["a"], 200)
            )
            connect_ms, got = tcp_fetch(router, link.argv("a"), GATEWAY["a"])
            at_a, at_b = exchange(*hosts(link, 200, 200))
    finally:
        link.stage.start()
    expected = {"a -> router": (up, 30), "router -> a": (down, 15), "a -> b": (at_b, 30 + 3),
                "b -> a": (at_a, 7 + 15)}  # fmt: skip
    for path, (seen, ms) in expected.items():
        d = seen.delays()
        print(f"{path}: median {statistics.median(d):.2f} ms ({ms} configured)")
        assert len(d) == 200, path
        assert ms - 0.05 <= min(d) <= statistics.median(d) <= ms + SLACK_MS, path
    print(f"local tcp: connected in {connect_ms:.1f} ms (45 configured), fetched {got} bytes")
    assert got == 100_000
    assert 45 - 0.05 <= connect_ms <= 45 + 2 * SLACK_MS
