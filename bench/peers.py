"""The parent's side of a call between two peer processes, each one side of the call.

``bench.netem`` runs ``bench.media_peer`` in its two namespaces, ``bench.real_network`` runs
``bench.lab_peer`` in the homes of the network lab; both talk JSON lines with the peers over
their stdin/stdout and, once the peers are done, load what each saved (``media_peer._save``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class PeerOutput:
    sent: np.ndarray[Any, Any]
    sent_times: list[float]
    marks: list[tuple[int, int, float]]
    heard: np.ndarray[Any, Any]
    heard_times: list[float]
    extra: dict[str, Any]


def load_output(path: Path) -> PeerOutput:
    with np.load(path) as data:
        return PeerOutput(
            sent=data["sent"].astype(np.int16),
            sent_times=[float(t) for t in data["sent_times"]],
            marks=[(int(m[0]), int(m[1]), float(m[2])) for m in data["marks"]],
            heard=data["heard"].astype(np.int16),
            heard_times=[float(t) for t in data["heard_times"]],
            extra=json.loads(str(data["extra"])),
        )


async def read_message(proc: asyncio.subprocess.Process, wait_s: float) -> dict[str, Any]:
    """The peer's next JSON line, within ``wait_s`` seconds."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), wait_s)
    if not line:
        raise RuntimeError("peer exited early")
    message: dict[str, Any] = json.loads(line)
    return message


def send_message(proc: asyncio.subprocess.Process, message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(message) + "\n").encode())


async def stop(*procs: asyncio.subprocess.Process) -> None:
    """Kill the peers still running and wait for every one of them."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
