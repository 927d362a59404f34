"""Attack 1.4: the server reorders, drops and duplicates envelopes (seeded).

Several real calls run at once through one malicious server; each caller/callee pair gets its
own seeded schedule: every envelope is dropped, delayed by a random amount (so later envelopes
overtake it) and/or delivered twice. Timeouts are short so a lost message shows quickly. Each
call must either connect correctly (equal SAS on both sides, audio both ways) or end cleanly
with a reason, on both sides, within a bound: never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import Behaviour, Envelope, running_server
from tests.adversarial.phones import Person, audio_flows, two_phones
from voice.call.events import State
from voice.errors import CallEnded
from voice.phone import Call, Phone

SHORT = {
    "no_answer_timeout": 3.0,
    "ring_grace": 1.0,
    "connect_timeout": 3.0,
    "media_timeout": 3.0,
    "ice_timeout": 3.0,
}
BOUND = 20.0  # seconds: longer than any timeout chain above
PAIRS = 6


class Chaos(Behaviour):
    """Per-sender seeded drop / delay (reorder) / duplicate."""

    def __init__(self, seed: int, *, drop: float, dup: float, max_delay: float) -> None:
        self.seed, self.drop, self.dup, self.max_delay = seed, drop, dup, max_delay
        self.rngs: dict[str, random.Random] = {}
        self.counts: Counter[str] = Counter()

    async def on_send(self, envelope: Envelope) -> None:
        rng = self.rngs.setdefault(envelope.sender, random.Random(f"{self.seed}/{envelope.sender}"))
        if rng.random() < self.drop:
            self.counts["dropped"] += 1
            return
        copies = 2 if rng.random() < self.dup else 1
        self.counts["duplicated"] += copies - 1
        for _ in range(copies):
            delay = rng.uniform(0, self.max_delay)
            self.counts["delayed"] += 1

            def go(e: Envelope = envelope) -> asyncio.Future[bool]:
                return asyncio.ensure_future(self.server.deliver(e.to, e.sender, e.body))

            self.server.later(delay, go)


async def one_call(pa: Phone, pb: Phone, callee: str) -> tuple[str, Call | None, Call | None]:
    """Run one call under chaos; return how it went, and both sides' calls."""
    pb.auto_answer = True
    a = await pa.call(callee)
    with contextlib.suppress(CallEnded):
        await a.wait_connected(timeout=BOUND)
    b = next(iter(pb.calls), None)
    if a.state is State.CONNECTED:
        assert b is not None
        await asyncio.sleep(0.3)
        if b.state is State.CONNECTED:
            assert a.sas is not None and a.sas == b.sas
            assert await audio_flows(a) and await audio_flows(b)
        await a.hangup()
    outcome_a = await a.wait_ended(timeout=BOUND)
    if b is not None:
        await b.wait_ended(timeout=BOUND)
    connected = a.timings.connected_at is not None
    return ("connected" if connected else str(outcome_a.reason.value)), a, b


@pytest.mark.parametrize(
    ("seed", "drop", "dup", "delay"),
    [(1, 0.0, 0.5, 0.3), (2, 0.2, 0.3, 0.3), (3, 0.35, 0.3, 0.2)],
)
async def test_chaotic_server_never_hangs_a_call(
    tmp_path: Path, seed: int, drop: float, dup: float, delay: float
) -> None:
    chaos = Chaos(seed, drop=drop, dup=dup, max_delay=delay)
    people = [
        (Person.make(f"caller{i}", tmp_path), Person.make(f"callee{i}", tmp_path))
        for i in range(PAIRS)
    ]
    async with running_server(chaos) as server:

        async def pair(caller: Person, callee: Person) -> tuple[str, Call | None, Call | None]:
            async with two_phones(server.url, caller, callee, **SHORT) as (pa, pb):
                return await one_call(pa, pb, callee.name)

        results = await asyncio.gather(*(pair(c, d) for c, d in people))
    outcomes = Counter(r[0] for r in results)
    for _, a, b in results:
        for call in (a, b):
            assert call is None or call.state.terminal  # ended, with a reason
            assert call is None or call.outcome is not None
    print(f"seed {seed} drop {drop} dup {dup}: {dict(outcomes)}; server {dict(chaos.counts)}")
    if drop == 0.0:  # duplicates and reordering alone must not break any call
        assert outcomes == Counter({"connected": PAIRS})
