"""The impairment stage, installed in a namespace that forwards: delay, jitter, loss, reordering,
duplication and a rate limit per direction, in userspace because this kernel has no sch_netem.

    with Stage(router_ns, {"ab": ["iif vetha"], "ba": ["iif vethb"]}) as stage:
        stage.configure({"ab": Profile(delay_ms=40, jitter_ms=20), "ba": Profile(loss=0.05)})
        ...
        stage.stats()["ab"].lost

Each direction is a list of ``ip rule`` selectors (``"iif vetha"``, ``"iif lo to 10.0.0.2"``);
every IPv4 packet they match goes, by policy routing (table ``table + i``), into that direction's
persistent TUN device ``imp-<direction>``. The runner process (``runner.py``, in the namespace)
reads it from the TUN, applies the direction's :class:`Profile`, and writes it back; it then
enters again from the TUN, which no selector names, and the main table routes it on. TUN devices
are IP-level (no ARP) and persistent: if the runner dies, packets are dropped, never forwarded
unimpaired.

Packets for the namespace's own addresses are looked up in the ``local`` table first and are not
impaired, unless ``local=True``: the stage then moves that rule after its own (and lets the TUNs
accept packets from local addresses), so a server inside the namespace is behind the stage too;
its rules then match UDP, TCP and ICMP only, so ARP still finds the local table, and early
demux is off (a packet matched to a local socket before routing would otherwise be dropped
when routing sends it to the TUN: the kernel does not forward packets that carry a socket).
:meth:`Stage.close` undoes all of it (the forwarding sysctls stay set).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.impair.netns import in_ns, run
from tests.support.impair.schedule import Counters, Profile

REPO = Path(__file__).resolve().parents[3]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,10}$")  # "imp-" + name fits IFNAMSIZ
LOCAL_PREF = 30_000  # where the local table's rule goes with local=True


def per_link(links: Mapping[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Directions for a namespace that joins access links ``name: (interface, prefix)``:
    ``up_<name>``, what arrives from the link, and ``down_<name>``, what goes to ``prefix``,
    whether sent by the namespace itself (use ``local=True``) or just out of another link's
    ``up`` stage. Link to link, a packet thus crosses the sender's up and the receiver's down,
    as over two real access links; names are at most 6 characters."""
    directions: dict[str, list[str]] = {}
    for name, (interface, prefix) in links.items():
        others = [f"iif imp-up_{other} to {prefix}" for other in links if other != name]
        directions[f"up_{name}"] = [f"iif {interface}"]
        directions[f"down_{name}"] = [f"iif lo to {prefix}", *others]
    return directions


def unavailable() -> str | None:
    """Why no stage can run here (None: it can), for a clean pytest skip."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "`ip` is missing: install iproute2"
    if os.geteuid() != 0:
        return "network namespaces and TUN devices need root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN driver)"
    probe = f"vi{os.getpid()}x0-probe"
    try:
        run("ip", "netns", "add", probe)
        try:
            run("ip", "-n", probe, "tuntap", "add", "dev", "imp-probe", "mode", "tun")
        finally:
            run("ip", "netns", "del", probe, check=False)
    except OSError as exc:
        return f"cannot create a namespace with a TUN device: {exc}"
    return None


class Stage:
    """The stage in namespace ``ns``; a context manager. See the module docstring."""

    def __init__(
        self,
        ns: str,
        directions: Mapping[str, Sequence[str]],
        *,
        local: bool = False,
        table: int = 100,
    ) -> None:
        for name in directions:
            if not _NAME.match(name):
                raise ValueError(f"direction names match {_NAME.pattern}, not {name!r}")
        self.ns = ns
        self.directions = {name: list(selectors) for name, selectors in directions.items()}
        self.local = local
        self.table = table
        self.realtime = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._tuns: list[str] = []
        self._prefs: list[int] = []
        self._moved_local = False
        self._restore: list[str] = []  # sysctl settings to put back on close

    def tun(self, direction: str) -> str:
        return f"imp-{direction}"

    def __enter__(self) -> Stage:
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
        try:
            self._install()
        except BaseException:
            self.close()
            raise

    def _install(self) -> None:
        ns = self.ns
        for setting in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                        "net.ipv4.conf.default.rp_filter=0"):  # fmt: skip
            in_ns(ns, "sysctl", "-q", "-w", setting)
        for name in self.directions:
            tun = self.tun(name)
            run("ip", "-n", ns, "tuntap", "add", "dev", tun, "mode", "tun")
            self._tuns.append(tun)
            # No IPv6 on the TUNs: their own router solicitations would be "impaired" too.
            in_ns(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{tun}.disable_ipv6=1", check=False)
            in_ns(ns, "sysctl", "-q", "-w", f"net.ipv4.conf.{tun}.rp_filter=0")
            if self.local:
                in_ns(ns, "sysctl", "-q", "-w", f"net.ipv4.conf.{tun}.accept_local=1")
            run("ip", "-n", ns, "link", "set", tun, "up")
        self._start_runner()
        for i, (name, selectors) in enumerate(self.directions.items()):
            table = str(self.table + i)
            run("ip", "-n", ns, "route", "add", "default", "dev", self.tun(name), "table", table)
            for selector in selectors:
                for match in self._matches(selector):
                    pref = self.table + len(self._prefs)
                    run("ip", "-n", ns, "rule", "add", "pref", str(pref), *match, "lookup", table)
                    self._prefs.append(pref)
        if self.local:
            for key in ("net.ipv4.tcp_early_demux", "net.ipv4.udp_early_demux"):
                was = in_ns(ns, "sysctl", "-n", key).stdout.strip()
                in_ns(ns, "sysctl", "-q", "-w", f"{key}=0")
                self._restore.append(f"{key}={was}")
            run("ip", "-n", ns, "rule", "add", "pref", str(LOCAL_PREF), "lookup", "local")
            self._moved_local = True
            run("ip", "-n", ns, "rule", "del", "pref", "0", "lookup", "local")

    def _matches(self, selector: str) -> list[list[str]]:
        """The rule(s) for one selector. With ``local``, one per IP protocol: the kernel answers
        ARP for its own addresses only if its route lookup (protocol 0, same ``iif``) finds
        the local table, which a bare ``iif`` rule ahead of it would hide."""
        if not self.local:
            return [selector.split()]
        return [[*selector.split(), "ipproto", proto] for proto in ("udp", "tcp", "icmp")]

    def _start_runner(self) -> None:
        pairs = [f"{name}={self.tun(name)}" for name in self.directions]
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.support.impair.runner",
             *pairs],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        hello = self._read(timeout=20)
        if not hello.get("ready"):
            raise OSError(f"the impairment runner did not start: {hello}")
        self.realtime = bool(hello.get("realtime"))

    def configure(self, profiles: Mapping[str, Profile], *, seed: int = 0) -> None:
        """Set the named directions' profiles (others keep theirs); direction number ``i`` (in
        the order given to the constructor) draws from seed ``seed + i``."""
        index = {name: i for i, name in enumerate(self.directions)}
        request = {
            name: {"profile": profile.to_json(), "seed": seed + index[name]}
            for name, profile in profiles.items()
        }
        answer = self._request({"configure": request})
        if not answer.get("ok"):
            raise RuntimeError(f"the impairment runner refused {request}: {answer}")

    def stats(self) -> dict[str, Counters]:
        """Each direction's counters since the stage started."""
        answer = self._request({"stats": True})
        return {name: Counters(**c) for name, c in answer["stats"].items()}

    def lateness(self) -> dict[str, float]:
        """How late the runner has released due packets since it started (runner.Lateness)."""
        late: dict[str, float] = self._request({"stats": True})["lateness"]
        return late

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise RuntimeError("the impairment runner is not running")
        proc.stdin.write(json.dumps(message).encode() + b"\n")
        proc.stdin.flush()
        return self._read(timeout=10)

    def _read(self, timeout: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if readable else b""
        if not line:
            raise OSError(f"no answer from the impairment runner (exit code {proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        """Stop the runner and remove the rules, routes and TUNs (idempotent, never raises)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()  # the runner exits at the end of its stdin
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._moved_local:
            run("ip", "-n", self.ns, "rule", "add", "pref", "0", "lookup", "local", check=False)
            run("ip", "-n", self.ns, "rule", "del", "pref", str(LOCAL_PREF), check=False)
            self._moved_local = False
        for setting in self._restore:
            in_ns(self.ns, "sysctl", "-q", "-w", setting, check=False)
        self._restore.clear()
        for pref in self._prefs:
            run("ip", "-n", self.ns, "rule", "del", "pref", str(pref), check=False)
        self._prefs.clear()
        for tun in self._tuns:
            run("ip", "-n", self.ns, "link", "del", tun, check=False)  # its routes go with it
        self._tuns.clear()
