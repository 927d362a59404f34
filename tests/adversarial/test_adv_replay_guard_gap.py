"""Found by the client fuzz (attack 5): a huge sequence-number gap breaks envelope handling.

Any sender whose envelope opens (any stranger on first contact, through any server) sends two
envelopes for one call id: seq 0, then seq 2^62. ``ReplayGuard.check`` shifts its window bitmap
left by the whole gap (``state.bitmap << shift``), so Python tries to build a 2^62-bit integer:
MemoryError inside the phone's delivery handler (caught there and counted as ``internal``).
Gaps of 2^30..2^40 do not fail at once: they allocate 128 MiB..128 GiB, stalling or killing the
client. Expected: a gap of ``window`` or more just resets the bitmap; the envelope is handled
like any other (here: an unknown call id, dropped quietly), with no internal error.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.adversarial.malicious_server import running_server
from tests.adversarial.phones import Person, nothing_rings, phone
from voice.call import messages as m
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.crypto.replay import ReplayGuard

GAP = 2**62


def test_replay_guard_accepts_a_huge_forward_gap() -> None:
    guard = ReplayGuard(clock=time.time)
    now = int(time.time() * 1000)
    sender, call_id = bytes(32), bytes(16)
    guard.check(sender, EnvelopeHeader(call_id, 0, now))
    guard.check(sender, EnvelopeHeader(call_id, GAP, now))  # MemoryError today


async def test_a_huge_sequence_gap_is_not_an_internal_error_in_the_phone(tmp_path: Path) -> None:
    carol = Person.make("carol", tmp_path)
    mallory = Identity.generate()
    async with running_server() as server, phone(carol, server.url) as pc:
        now = int(time.time() * 1000)
        for seq in (0, GAP):
            header = EnvelopeHeader(b"\x07" * 16, seq, now)
            body = seal(mallory, carol.identity.public_key, header, m.encode(m.Hangup()))
            await server.deliver("carol", "mallory", body)
        assert await nothing_rings(pc, 0.3)
        assert pc.dropped["internal"] == 0, dict(pc.dropped)
