"""A signaling server process whose file-descriptor limit the test squeezes on command.

    python -m tests.adversarial.fd_server        # prints {"port": ..., "http_port": ...}

Then, one command a line on stdin: ``squeeze`` sets the soft RLIMIT_NOFILE just above the
descriptors in use, so that the next accept() fails with EMFILE; ``release`` puts the limit
back; ``quit`` (or EOF) stops the server. Each command is acknowledged with a line on stdout.
Logs go to stderr as the real server's do (JSON lines).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys

from signaling.config import Config
from signaling.logs import configure_logging
from signaling.server import serve_signaling


def squeeze() -> None:
    """Allow no new descriptor: the soft limit becomes one above the highest one open."""
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))


async def main() -> None:
    configure_logging("INFO")
    loop = asyncio.get_running_loop()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with serve_signaling(Config(port=0, http_port=0, db=":memory:")) as server:
        print(json.dumps({"port": server.port, "http_port": server.http_port}), flush=True)
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "squeeze":
                squeeze()
            elif command == "release":
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            else:
                break
            print(command, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
