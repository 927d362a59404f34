"""The stage's process: IP packets from TUN devices, through a Scheduler each, back into them.

    ip netns exec NS python -m tests.support.impair.runner ab=imp-ab ba=imp-ba

Run by ``stage.py`` inside the forwarding namespace, where policy routing sends each
direction's forwarded packets into its own (persistent) TUN device. A packet written back into
the TUN enters the namespace again and the main routing table sends it on. The kernel has no
``sch_netem`` here, so this replaces it.

Control is JSON lines on stdin, one answer line each on stdout: ``{"configure": {direction:
{"profile": {...}, "seed": n}}}`` answers ``{"ok": true}``; ``{"stats": true}`` answers
``{"stats": {direction: counters}}``. It prints ``{"ready": true}`` once attached, and exits at
the end of stdin (so it never outlives the process that controls it).
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import json
import os
import select
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

from tests.support.impair.schedule import Profile, Scheduler

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_BURST = 64  # packets read from one TUN per wake-up, so neither direction starves the other


def open_tun(name: str) -> int:
    """Attach to the TUN device ``name`` (IP packets, no packet-information header)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def realtime() -> bool:
    """Ask for SCHED_FIFO, so busy peers on the same cores do not add their load to our delays
    (netem runs in the kernel's softirq and is not delayed by them either)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return True
    except (OSError, AttributeError):
        return False


@dataclass
class Lateness:
    """How late the runner woke for due packets: what the stage adds to the profile's delays
    (scheduling on a loaded or virtualised machine), so a measurement can tell it apart."""

    wakeups: int = 0
    over_1ms: int = 0
    over_5ms: int = 0
    max_ms: float = 0.0

    def record(self, late: float) -> None:
        self.wakeups += 1
        self.over_1ms += late > 0.001
        self.over_5ms += late > 0.005
        self.max_ms = max(self.max_ms, 1000 * late)


class Runner:
    """The event loop: wake for a packet, a control line, or the next due time."""

    def __init__(self, tuns: dict[str, int]) -> None:
        self.tuns = tuns
        self.schedulers = {name: Scheduler() for name in tuns}
        self.write_errors = 0
        self.lateness = Lateness()
        self._names = {fd: name for name, fd in tuns.items()}
        self._control = b""

    def run(self) -> None:
        while True:
            dues = [d for s in self.schedulers.values() if (d := s.next_due()) is not None]
            timeout = max(0.0, min(dues) - time.monotonic()) if dues else None
            # select(), not epoll: its timeout has microseconds, epoll's whole milliseconds.
            readable, _, _ = select.select([*self._names, sys.stdin.fileno()], [], [], timeout)
            for fd in readable:
                if fd in self._names:
                    self._on_packets(self._names[fd])
                elif not self._on_control():
                    return
            now = time.monotonic()
            for name, scheduler in self.schedulers.items():
                due = scheduler.next_due()
                if due is not None and due <= now:
                    self.lateness.record(now - due)
                for packet in scheduler.release(now):
                    self._write(self.tuns[name], packet)

    def _on_packets(self, name: str) -> None:
        fd, scheduler = self.tuns[name], self.schedulers[name]
        for _ in range(READ_BURST):
            try:
                packet = os.read(fd, 65_536)
            except BlockingIOError:
                return
            scheduler.arrive(packet, time.monotonic())

    def _write(self, fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError:
            self.write_errors += 1

    def _on_control(self) -> bool:
        chunk = os.read(sys.stdin.fileno(), 65_536)
        if not chunk:
            return False
        self._control += chunk
        while b"\n" in self._control:
            line, self._control = self._control.split(b"\n", 1)
            if line.strip():
                try:
                    answer = self._answer(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                _say(answer)
        return True

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if "configure" in request:
            for name, conf in request["configure"].items():
                profile = Profile.from_json(conf["profile"])
                self.schedulers[name].configure(profile, seed=int(conf["seed"]))
            return {"ok": True}
        if "stats" in request:
            stats = {n: dataclasses.asdict(s.counters) for n, s in self.schedulers.items()}
            late = dataclasses.asdict(self.lateness)
            return {"stats": stats, "write_errors": self.write_errors, "lateness": late}
        return {"error": f"unknown request {sorted(request)}"}


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    pairs = dict(arg.split("=", 1) for arg in argv)
    tuns = {direction: open_tun(device) for direction, device in pairs.items()}
    gc.freeze()  # what is loaded now is never collected: shorter pauses while forwarding
    _say({"ready": True, "realtime": realtime()})
    Runner(tuns).run()


if __name__ == "__main__":
    main(sys.argv[1:])
