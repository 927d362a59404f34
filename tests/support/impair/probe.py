"""One end of a measurement through the stage: numbered, timestamped UDP to a peer, and a record
of what arrived from it.

    ip netns exec NS python -m tests.support.impair.probe --bind 10.199.1.2 --peer 10.199.2.2 \\
        --count 2000 --interval 0.002 --size 100

Prints ``{"bound": true}`` and waits for a line on stdin (so both ends listen before either
sends), sends ``count`` packets of ``size`` bytes, one every ``interval`` seconds, listens for
at least ``listen`` seconds and ``linger`` seconds more, then prints ``{"sent": n,
"received": [[seq, sent_at, received_at, size], ...]}``. Times are CLOCK_REALTIME, the same in
every namespace: the sender's clock just before ``sendto`` and the kernel's receive timestamp
(SO_TIMESTAMPNS), so the probe's own wake-up latency is not measured as network delay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import time

PORT = 47_000
HEADER = struct.Struct("!Id")  # sequence number, send time
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("qq")


def _received_at(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = TIMESPEC.unpack(data[: TIMESPEC.size])
            return int(sec) + int(nsec) / 1e9
    return time.time()


def measure(
    sock: socket.socket, peer: tuple[str, int], count: int, interval: float, size: int,
    listen: float, linger: float,
) -> tuple[int, list[list[float]]]:  # fmt: skip
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    padding = bytes(max(0, size - HEADER.size))
    received: list[list[float]] = []
    start = time.monotonic()
    sent = 0
    end = start + max(count * interval, listen) + linger
    while (now := time.monotonic()) < end:
        if sent < count and now >= start + sent * interval:
            sock.sendto(HEADER.pack(sent, time.time()) + padding, peer)
            sent += 1
            continue
        wake = start + sent * interval if sent < count else end
        if selector.select(max(0.0, wake - time.monotonic())):
            while True:
                try:
                    data, ancillary, _, _ = sock.recvmsg(65_536, 256, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                seq, sent_at = HEADER.unpack_from(data)
                received.append([seq, sent_at, _received_at(ancillary), len(data)])
    return sent, received


def realtime() -> None:
    """SCHED_FIFO (below the stage's runner) where allowed, so that a loaded machine delays
    neither the send timestamps nor the sends and the measurement stays the network's."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--listen", type=float, default=0.0, help="at least this long (s)")
    parser.add_argument("--linger", type=float, default=1.0, help="after sending and listening")
    args = parser.parse_args()
    realtime()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((args.bind, PORT))
    print(json.dumps({"bound": True}), flush=True)
    sys.stdin.readline()
    sent, received = measure(
        sock, (args.peer, PORT), args.count, args.interval, args.size, args.listen, args.linger
    )
    print(json.dumps({"sent": sent, "received": received}), flush=True)


if __name__ == "__main__":
    main()
