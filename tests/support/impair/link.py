"""Two hosts joined through the impairment stage: namespaces ``a`` and ``b``, each with a veth to
a router namespace ``r`` that runs the stage ("ab": what a sends, "ba": what b sends).

    with ImpairedLink() as link:
        link.stage.configure({"ab": Profile(delay_ms=40, jitter_ms=20), "ba": Profile()})
        link.run("a", "python", ...)       # or link.exec_argv("a", ...) for asyncio

Addresses: a is 10.199.1.2/24 (router 10.199.1.1), b is 10.199.2.2/24 (router 10.199.2.1).
Namespace names carry the creating process's pid (``vi<pid>x<n>-a``); a new link first deletes
those of runs whose process is gone, and :meth:`ImpairedLink.close` deletes its own, also
after an error.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from types import TracebackType
from typing import Literal

from tests.support.impair.netns import delete, in_ns, remove_leftovers, run
from tests.support.impair.stage import Stage

End = Literal["a", "b"]
ADDR: dict[End, str] = {"a": "10.199.1.2", "b": "10.199.2.2"}
GATEWAY: dict[End, str] = {"a": "10.199.1.1", "b": "10.199.2.1"}
_LEFTOVER = re.compile(r"^vi(\d+)x\d+-")
_counter = itertools.count(1)


class ImpairedLink:
    """The three namespaces and the stage; a context manager. See the module docstring."""

    def __init__(self) -> None:
        prefix = f"vi{os.getpid()}x{next(_counter)}-"
        self.ns: dict[End, str] = {"a": prefix + "a", "b": prefix + "b"}
        self.router = prefix + "r"
        self.stage = Stage(self.router, {"ab": ["iif ra"], "ba": ["iif rb"]})
        self._made: list[str] = []

    def __enter__(self) -> ImpairedLink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Build it all; OSError (with the reason) if this machine does not allow it."""
        remove_leftovers(_LEFTOVER)
        try:
            self._build()
            self.stage.start()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in (self.router, *self.ns.values()):
            run("ip", "netns", "add", ns)
            self._made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        for end, ns in self.ns.items():
            inside, outside = "eth0", f"r{end}"
            run("ip", "link", "add", inside, "netns", ns, "type", "veth", "peer", "name",
                outside, "netns", self.router)  # fmt: skip
            run("ip", "-n", ns, "addr", "add", f"{ADDR[end]}/24", "dev", inside)
            run("ip", "-n", self.router, "addr", "add", f"{GATEWAY[end]}/24", "dev", outside)
            run("ip", "-n", ns, "link", "set", inside, "up")
            run("ip", "-n", self.router, "link", "set", outside, "up")
            run("ip", "-n", ns, "route", "add", "default", "via", GATEWAY[end])

    def close(self) -> None:
        """Stop the stage and delete the namespaces (idempotent)."""
        self.stage.close()
        for ns in reversed(self._made):
            delete(ns)
        self._made.clear()

    def run(self, end: End, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on host ``end`` and wait for it."""
        return in_ns(self.ns[end], *cmd, check=check)

    def argv(self, end: End, *cmd: str) -> list[str]:
        """``cmd`` as run on host ``end`` (for Popen or asyncio subprocesses)."""
        return ["ip", "netns", "exec", self.ns[end], *cmd]
