"""What the impairment stage does to each packet, decided without I/O so it can be unit-tested.

One :class:`Scheduler` per direction. The caller hands it packets as they arrive
(:meth:`Scheduler.arrive`), asks when the next one is due (:meth:`Scheduler.next_due`) and
takes what is due (:meth:`Scheduler.release`); the caller owns the clock. Every random choice
is drawn at arrival, in a fixed order, from generators seeded by the caller, so the same seed
and the same arrivals give every packet the same fate: the unit tests check the statistics
offline, and ``runner.py`` applies exactly those decisions to real packets.

A packet's path, in the order a real network applies it:

1. **loss**: random, or Gilbert-Elliott bursts (the seeded models of ``voice.media.loss``);
2. **duplication**: with probability ``duplicate`` a second copy follows, with its own delay;
3. **bottleneck**: at ``rate_kbit`` each copy waits until the link is free, then holds it for its
   serialization time; a copy that would wait more than ``queue_ms`` is tail-dropped;
4. **delay**: ``delay_ms`` plus uniform jitter in ``±jitter_ms`` (clipped at zero), drawn per
   packet. As with ``tc netem delay D J``, jitter larger than the packet spacing reorders;
   ``ordered=True`` keeps the direction first-in first-out instead (jitter from a queue);
5. **reordering**: with probability ``reorder`` a packet is held back until ``reorder_gap``
   later packets have left, or for at most ``reorder_hold_ms`` if the stream pauses.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voice.media.loss import GilbertElliott, LossModel, RandomLoss


@dataclass(frozen=True)
class Profile:
    """The impairment of one direction (all zero: a clean wire)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    ordered: bool = False
    loss: float = 0.0
    loss_burst: float | None = None  # mean burst length in packets: Gilbert-Elliott; None: random
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_gap: int = 1
    reorder_hold_ms: float = 100.0
    rate_kbit: float | None = None
    queue_ms: float = 200.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {p}")
        if self.loss_burst is not None and not self.loss < 1.0:
            raise ValueError("bursty loss needs a loss rate below 1")
        if self.loss_burst is not None and self.loss_burst < 1.0:
            raise ValueError(f"loss_burst must be >= 1 packet, not {self.loss_burst}")
        for name in ("delay_ms", "jitter_ms", "reorder_hold_ms", "queue_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.reorder_gap < 1:
            raise ValueError(f"reorder_gap must be >= 1 packet, not {self.reorder_gap}")
        if self.rate_kbit is not None and self.rate_kbit <= 0:
            raise ValueError(f"rate_kbit must be > 0 (or None: unlimited), not {self.rate_kbit}")

    def loss_model(self, seed: int) -> LossModel:
        if self.loss_burst is None:
            return RandomLoss(self.loss, seed=seed)
        return GilbertElliott.from_mean(self.loss, self.loss_burst, seed=seed)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown profile fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class Counters:
    """What a direction did so far (copies count once each in ``released``)."""

    arrived: int = 0
    lost: int = 0
    duplicated: int = 0
    queue_dropped: int = 0
    reordered: int = 0
    released: int = 0


@dataclass(order=True)
class _Due:
    due: float
    order: int
    packet: bytes = dataclasses.field(compare=False)
    hold: bool = dataclasses.field(compare=False)


@dataclass
class _Held:
    packet: bytes
    wait_for: int  # regular packets still to leave before this one
    deadline: float


class Scheduler:
    """One direction of the stage: packets in with :meth:`arrive`, out with :meth:`release`."""

    def __init__(self, profile: Profile | None = None, *, seed: int = 0) -> None:
        self.counters = Counters()
        self._heap: list[_Due] = []
        self._held: list[_Held] = []
        self._order = 0
        self._link_free = float("-inf")  # when the bottleneck finishes its backlog
        self._last_due = float("-inf")
        self.configure(profile or Profile(), seed=seed)

    def configure(self, profile: Profile, *, seed: int) -> None:
        """New profile and seed for packets from now on; packets in flight keep their fate."""
        self.profile = profile
        master = random.Random(seed)
        self._loss = profile.loss_model(master.getrandbits(63))
        self._rng = random.Random(master.getrandbits(63))

    @property
    def pending(self) -> int:
        """Packets (copies) inside: scheduled or held."""
        return len(self._heap) + len(self._held)

    def arrive(self, packet: bytes, now: float) -> None:
        p, c = self.profile, self.counters
        c.arrived += 1
        if self._loss.drop():
            c.lost += 1
            return
        copies = 2 if self._rng.random() < p.duplicate else 1
        c.duplicated += copies - 1
        for _ in range(copies):
            jitter = self._rng.uniform(-p.jitter_ms, p.jitter_ms)
            hold = self._rng.random() < p.reorder
            ready = self._through_bottleneck(len(packet), now)
            if ready is None:
                c.queue_dropped += 1
                continue
            due = ready + max(0.0, p.delay_ms + jitter) / 1000
            if p.ordered:
                due = max(due, self._last_due)
            self._last_due = max(self._last_due, due)
            heapq.heappush(self._heap, _Due(due, self._order, packet, hold))
            self._order += 1

    def _through_bottleneck(self, size: int, now: float) -> float | None:
        """When the last bit of a ``size``-byte copy has crossed the link (None: tail-dropped)."""
        rate = self.profile.rate_kbit
        if rate is None:
            return now
        start = max(now, self._link_free)
        if start - now > self.profile.queue_ms / 1000:
            return None
        self._link_free = start + size * 8 / (rate * 1000)
        return self._link_free

    def next_due(self) -> float | None:
        """When :meth:`release` next has something to give (None: nothing inside)."""
        times = [h.deadline for h in self._held]
        if self._heap:
            times.append(self._heap[0].due)
        return min(times, default=None)

    def release(self, now: float) -> list[bytes]:
        """The packets due by ``now``, in the order they leave."""
        out: list[bytes] = []
        while self._heap and self._heap[0].due <= now:
            entry = heapq.heappop(self._heap)
            if entry.hold:
                deadline = entry.due + self.profile.reorder_hold_ms / 1000
                self._held.append(_Held(entry.packet, self.profile.reorder_gap, deadline))
                self.counters.reordered += 1
                continue
            out.append(entry.packet)
            for held in self._held:
                held.wait_for -= 1
            out += self._let_go(lambda h: h.wait_for <= 0)
        out += self._let_go(lambda h: h.deadline <= now)
        self.counters.released += len(out)
        return out

    def _let_go(self, ready: Callable[[_Held], bool]) -> list[bytes]:
        gone = [h for h in self._held if ready(h)]
        if gone:
            self._held = [h for h in self._held if not ready(h)]
        return [h.packet for h in gone]
