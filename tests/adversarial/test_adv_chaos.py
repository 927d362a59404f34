"""Attack 1.4: the server delays, drops and duplicates envelopes (seeded).

Several real calls run at once through one malicious server; each caller/callee pair gets its
own seeded schedule: every envelope is dropped, delayed by a random amount and/or delivered
twice. Each call message waits for the answer to the one before, so a delay rarely reorders
one sender's envelopes: only a late duplicate copy (or a hangup) can overtake a later envelope,
and the test counts how often that happened ("overtaken") without relying on it. Timeouts are
short so a lost message shows quickly. Each call must either connect correctly (both sides,
equal SAS, audio both ways) or end cleanly with a reason, on both sides, within a bound: never
hang. A call connects exactly when its setup messages all got through (its accept, the last
of them, was delivered): delays and duplicates break none. With nothing lost every call
connects: seed 0 is the control without any chaos, seed 1 delays and duplicates only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.adversarial.malicious_server import (
    Behaviour,
    Envelope,
    MaliciousServer,
    running_server,
)
from tests.adversarial.phones import Person, audio_flows, kind_of, two_phones
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
    """Per-sender seeded drop / delay / duplicate."""

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


def overtaken(server: MaliciousServer) -> int:
    """Deliveries that came after a later-sent envelope of the same sender to the same user."""
    sent = {(e.sender, e.to, e.body): i for i, e in enumerate(server.envelopes)}
    newest: dict[tuple[str, str], int] = {}
    count = 0
    for e in server.delivered:
        index, stream = sent[e.sender, e.to, e.body], (e.sender, e.to)
        count += index < newest.get(stream, -1)
        newest[stream] = max(index, newest.get(stream, -1))
    return count


async def one_call(pa: Phone, pb: Phone, callee: str) -> tuple[str, Call | None, Call | None]:
    """Run one call under chaos; return how it went, and both sides' calls."""
    pb.auto_answer = True
    a = await pa.call(callee)
    with contextlib.suppress(CallEnded):
        await a.wait_connected(timeout=BOUND)
    b = next(iter(pb.calls), None)
    if a.state is State.CONNECTED:
        # The callee sends the accept that connects the caller only once it is connected itself,
        # so a connected caller means a whole call: both sides, equal SAS, audio both ways.
        assert b is not None and b.timings.connected_at is not None
        assert b.state is State.CONNECTED
        await b.wait_connected(timeout=BOUND)  # its first authenticated packet may still fly
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
    [(0, 0.0, 0.0, 0.0), (1, 0.0, 0.5, 0.3), (2, 0.2, 0.3, 0.3), (3, 0.35, 0.3, 0.2)],
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
    # Which calls got their last setup message, the callee's accept, through the chaos. The
    # accept is sent only after offer, ringing and reveal arrived, so these are the calls none
    # of whose setup messages was lost.
    accepted = [
        any(e.to == caller.name and kind_of(caller, e.body) == "accept" for e in server.delivered)
        for caller, _ in people
    ]
    print(
        f"seed {seed} drop {drop} dup {dup}: {dict(outcomes)}, {sum(accepted)} accepts "
        f"delivered; server {dict(chaos.counts)}, {overtaken(server)} overtaken"
    )
    # Delays and duplicates never break a call whose messages arrive, and no call connects
    # without them: exactly the calls whose accept was delivered connected.
    assert [r[0] == "connected" for r in results] == accepted
    if drop == 0.0:  # nothing lost (no chaos at all for seed 0, the control): all connect
        assert outcomes == Counter({"connected": PAIRS})
