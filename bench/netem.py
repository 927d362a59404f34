"""Calls between two network namespaces through the userspace impairment stage.

This kernel has no ``sch_netem`` ("Specified qdisc kind is unknown"), so loss, delay and jitter
come from ``tests/support/impair``: hosts a (10.199.1.2) and b (10.199.2.2) joined through a
router namespace that passes every forwarded packet through a seeded :class:`Profile` per
direction (:class:`ImpairedLink`). Everything on the path is impaired, as netem would: RTP,
RTCP, ICE and DTLS alike.

The namespaces exist only while the benchmark runs; :func:`namespaces` removes them on exit,
also after an error. Each side of a call runs as ``python -m bench.media_peer`` inside its
namespace; the parent relays the descriptions (and, for our client, the keys) over the peers'
stdin/stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.peers import PeerOutput, load_output, read_message, send_message, stop
from tests.support.impair.link import ADDR, End, ImpairedLink
from tests.support.impair.schedule import Profile
from tests.support.impair.stage import unavailable

TOOL = "stage"  # how the results name this mode: the userspace impairment stage
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def namespaces() -> Iterator[ImpairedLink]:
    """The two hosts and the stage between them; OSError (with the reason) if not possible."""
    why = unavailable()
    if why is not None:
        raise OSError(why)
    with ImpairedLink() as link:
        yield link


def impair(link: ImpairedLink, profile: Profile, seed: int) -> None:
    """The same profile both ways (each direction drawing from its own seed)."""
    link.stage.configure({"ab": profile, "ba": profile}, seed=seed)


async def _peer(
    link: ImpairedLink, impl: str, role: str, seconds: float, out: Path
) -> asyncio.subprocess.Process:
    end: End = "a" if role == "caller" else "b"
    addr = ADDR[end]
    return await asyncio.create_subprocess_exec(
        *link.argv(end, sys.executable, "-m", "bench.media_peer"),
        "--impl", impl, "--role", role, "--addr", addr, "--seconds", str(seconds),
        "--out", str(out),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def netem_call(
    link: ImpairedLink, impl: str, seconds: float
) -> tuple[PeerOutput, PeerOutput]:
    """One call from a to b (the stage already set): (caller output, callee output)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = (Path(tmp) / "caller.npz", Path(tmp) / "callee.npz")
        caller = await _peer(link, impl, "caller", seconds, outs[0])
        callee = await _peer(link, impl, "callee", seconds, outs[1])
        try:
            a, b = await read_message(caller, 30), None
            if impl == "ours":
                b = await read_message(callee, 30)
                k1, k2 = os.urandom(44).hex(), os.urandom(44).hex()
                send_message(caller, {"description": b["description"], "tx": k1, "rx": k2})
                send_message(callee, {"description": a["description"], "tx": k2, "rx": k1})
            else:
                send_message(callee, a)
                send_message(caller, await read_message(callee, 30))
            for proc in (caller, callee):
                done = await read_message(proc, seconds + 60)
                assert done.get("done"), done
            return load_output(outs[0]), load_output(outs[1])
        finally:
            await stop(caller, callee)
