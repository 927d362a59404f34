"""Loss from the kernel: two network namespaces joined by a veth pair, ``tc netem`` on both ends.

Where the kernel has no ``sch_netem`` (this machine's: "Specified qdisc kind is unknown"), the
same random loss comes from ``iptables -m statistic --mode random`` on each namespace's UDP
output instead; bursty (Gilbert-Elliott) loss needs netem and is then skipped.

The namespaces and the /30 between them (10.199.0.1 <-> 10.199.0.2) exist only while the
benchmark runs; :func:`namespaces` removes them on exit, also after an error. Each side of a
call runs as ``python -m bench.media_peer`` inside its namespace; the parent relays the
descriptions (and, for our client, the keys) over the peers' stdin/stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.peers import PeerOutput, load_output, read_message, send_message, stop

NS = ("vbench_a", "vbench_b")
VETH = ("vbench0", "vbench1")
ADDR = ("10.199.0.1", "10.199.0.2")
ROOT = Path(__file__).resolve().parent.parent


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _cleanup() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@contextlib.contextmanager
def namespaces() -> Iterator[None]:
    """Create the two namespaces and the veth pair; raise OSError if not allowed here."""
    _cleanup()
    try:
        for ns in NS:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", VETH[0], "netns", NS[0], "type", "veth", "peer", VETH[1], "netns", NS[1])
        for ns, dev, addr in zip(NS, VETH, ADDR, strict=True):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        _cleanup()
        detail = (
            exc.stderr.decode().strip() if isinstance(exc, subprocess.CalledProcessError) else ""
        )
        raise OSError(f"cannot create network namespaces: {exc} {detail}") from exc
    try:
        yield
    finally:
        _cleanup()


def kernel_loss_tool() -> str:
    """ "netem" if the kernel has sch_netem, else "iptables" (random loss only), else OSError."""
    try:
        set_netem(["loss", "0%"])
        return "netem"
    except OSError:
        pass
    try:
        set_iptables_loss(0.0)
        return "iptables"
    except OSError as exc:
        raise OSError(f"neither tc netem nor iptables statistic works here: {exc}") from exc


def _run_in(ns: str, *cmd: str) -> None:
    try:
        _ip("netns", "exec", ns, *cmd)
    except subprocess.CalledProcessError as exc:
        raise OSError(f"{' '.join(cmd[:3])}: {exc.stderr.decode().strip()}") from exc


def set_netem(netem: list[str]) -> None:
    """Apply the same netem options (e.g. ["loss", "5%"]) to both directions."""
    for ns, dev in zip(NS, VETH, strict=True):
        _run_in(ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem", *netem)


def set_iptables_loss(rate: float) -> None:
    """Random loss of outgoing UDP in both namespaces (the fallback when netem is missing)."""
    for ns in NS:
        _run_in(ns, "iptables", "-F", "OUTPUT")
        if rate > 0:
            _run_in(ns, "iptables", "-A", "OUTPUT", "-p", "udp", "-m", "statistic",
                    "--mode", "random", "--probability", f"{rate}", "-j", "DROP")  # fmt: skip


async def _peer(
    impl: str, role: str, ns: str, addr: str, seconds: float, out: Path
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-m", "bench.media_peer",
        "--impl", impl, "--role", role, "--addr", addr, "--seconds", str(seconds),
        "--out", str(out),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def netem_call(impl: str, seconds: float) -> tuple[PeerOutput, PeerOutput]:
    """One call between the namespaces (netem already set): (caller output, callee output)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = (Path(tmp) / "caller.npz", Path(tmp) / "callee.npz")
        caller = await _peer(impl, "caller", NS[0], ADDR[0], seconds, outs[0])
        callee = await _peer(impl, "callee", NS[1], ADDR[1], seconds, outs[1])
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
