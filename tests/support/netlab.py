"""A network lab of Linux network namespaces: two homes behind NATs and a "public" Internet
running the real signaling server (wss, test CA) and a real coturn (UDP, TCP and TLS).

    with NetLab("nat", tmp_path) as lab:          # or: async with NetLab(...) as lab
        alice, bob = lab.user("alice", "a"), lab.user("bob", "b")
        lab.verify(alice, bob)                     # both pinned and verified (as after a SAS)
        listen = await lab.voice(bob, "listen", "--auto-answer", "--silence", "--no-output")
        call = await lab.voice(alice, "call", "bob", "--tone", "440", "--duration", "3")
        await lab.outage("b", 20)                  # the home router drops everything for 20 s
        lab.counters()["signaling_udp"] == 0       # iptables counters in the public namespace

Topology (every box is a namespace; ``{p}`` is a prefix unique to the run)::

                       {p}inet  "the Internet"
             203.0.113.10 signaling (wss :443)   203.0.113.20 coturn (udp/tcp 3478, tls 5349)
              198.51.100.1 |                             | 198.51.100.5
                       veth|                             |veth
              198.51.100.2 |                             | 198.51.100.6
                       {p}ra  home a router       {p}rb  home b router   (MASQUERADE: nat,
               192.168.1.1 |                             | 192.168.1.1     symmetric, udp_blocked)
                       veth|                             |veth
              192.168.1.10 |                             | 192.168.1.10
                       {p}ha  alice's host        {p}hb  bob's host

Variants: ``direct`` (no NAT: the hosts are 192.0.2.10 and 192.0.2.74, public and routed),
``nat`` (MASQUERADE: endpoint-independent mapping, conntrack filtering), ``symmetric``
(MASQUERADE --random-fully: a new public port per destination, so STUN's answer is useless to
the peer), ``udp_blocked`` (``nat``, and home b drops every outbound UDP packet except DNS).

Needs root, ``ip`` (iproute2), ``iptables`` and ``turnserver`` (coturn): :func:`unavailable`
says what is missing, for a clean pytest skip. Namespace names carry the creating process's
pid; a new lab first deletes the namespaces of runs whose process is gone (a killed run).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from tests.support.impair.netns import delete as delete_namespace
from tests.support.impair.schedule import Profile
from tests.support.impair.stage import Stage, per_link
from tests.support.processes import stop_process
from tests.support.tls import TestCA
from tests.voice.cli_harness import VoiceProc

REPO = Path(__file__).resolve().parents[2]
Variant = Literal["direct", "nat", "symmetric", "udp_blocked"]
VARIANTS: tuple[Variant, ...] = ("direct", "nat", "symmetric", "udp_blocked")
Home = Literal["a", "b"]

SIGNALING_IP = "203.0.113.10"
TURN_IP = "203.0.113.20"
SIGNALING_PORT = 443
HTTP_PORT = 8766  # /healthz and /metrics: bound to 127.0.0.1 inside the public namespace
TURN_PORT = 3478
TURNS_PORT = 5349
RELAY_PORTS = (49_152, 49_451)  # coturn's relay range
SERVER_ID = "netlab0000000000netlab0000000000"
WAN = {"a": ("198.51.100.1", "198.51.100.2"), "b": ("198.51.100.5", "198.51.100.6")}
NAT_LAN = ("192.168.1.1", "192.168.1.10", "192.168.1.11", 24)  # router, host, moved host, bits
DIRECT_LAN = {
    "a": ("192.0.2.1", "192.0.2.10", "192.0.2.11", 26),
    "b": ("192.0.2.65", "192.0.2.74", "192.0.2.75", 26),
}
_NAME = re.compile(r"^vl(\d+)x\d+-")
_counter = itertools.count(1)


def unavailable() -> str | None:
    """Why no lab can be built here (None: it can). Checks tools, root and a real namespace."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("turnserver", "coturn")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: install {package} (scripts/setup.sh does)"
    if os.geteuid() != 0:
        return "network namespaces need root (run the netlab tests as root)"
    probe = f"vl{os.getpid()}x0-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        rules = subprocess.run(
            ["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-L", "-n"],
            capture_output=True,
            text=True,
        )
        if rules.returncode != 0:
            return f"iptables does not work in a namespace: {rules.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def remove_leftovers() -> list[str]:
    """Delete the lab namespaces of runs whose process is gone; returns their names."""
    gone = []
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m is None:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # that run is alive (maybe another pytest worker)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        delete_namespace(name)
        gone.append(name)
    return gone


@dataclass
class LabUser:
    """A person: a config dir (identity, contacts, server pins) on the host of ``home``."""

    name: str
    home: Home
    conf: Path


@dataclass(frozen=True)
class Addressing:
    router_lan: str
    host: str
    moved: str
    bits: int


class NetLab:
    """The lab; a context manager (sync or async). See the module docstring."""

    def __init__(
        self,
        variant: Variant,
        workdir: Path,
        *,
        turn: bool = True,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        self.variant: Variant = variant
        self.workdir = workdir
        self.turn = turn
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.prefix = f"vl{os.getpid()}x{next(_counter)}-"
        self.inet = self.prefix + "inet"
        self.routers: dict[Home, str] = {"a": self.prefix + "ra", "b": self.prefix + "rb"}
        self.hosts: dict[Home, str] = {"a": self.prefix + "ha", "b": self.prefix + "hb"}
        self.turn_secret = secrets.token_hex(16)
        self.server_url = f"wss://{SIGNALING_IP}:{SIGNALING_PORT}"
        self.ca: TestCA | None = None
        self._made: list[str] = []
        self._server: subprocess.Popen[bytes] | None = None
        self._coturn: subprocess.Popen[bytes] | None = None
        self._moved: set[Home] = set()
        self._blocked: set[Home] = set()
        self._voices: list[VoiceProc] = []
        self.stage: Stage | None = None  # the impairment stage, once :meth:`impair` started it
        self.server_log = workdir / "signaling.log"
        self.coturn_log = workdir / "turnserver.log"

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def nat(self) -> bool:
        return self.variant != "direct"

    def addressing(self, home: Home) -> Addressing:
        router, host, moved, bits = NAT_LAN if self.nat else DIRECT_LAN[home]
        return Addressing(router, host, moved, bits)

    def host_ip(self, home: Home) -> str:
        """The home host's current address (private behind a NAT)."""
        a = self.addressing(home)
        return a.moved if home in self._moved else a.host

    def public_ip(self, home: Home) -> str:
        """The address the Internet sees for this home (its router's, or the host's)."""
        return WAN[home][1] if self.nat else self.host_ip(home)

    @property
    def ca_path(self) -> Path:
        assert self.ca is not None, "the lab is not running"
        return self.ca.cert_path

    @property
    def turn_uris(self) -> tuple[str, ...]:
        return (
            f"stun:{TURN_IP}:{TURN_PORT}",
            f"turn:{TURN_IP}:{TURN_PORT}?transport=udp",
            f"turn:{TURN_IP}:{TURN_PORT}?transport=tcp",
            f"turns:{TURN_IP}:{TURNS_PORT}?transport=tcp",
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> NetLab:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_voices()
        self.close()

    def start(self) -> None:
        why = unavailable()
        if why is not None:
            raise RuntimeError(why)
        remove_leftovers()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._build()
            self._pki()
            self.start_coturn()
            self.start_server()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every process we started and delete every namespace (idempotent)."""
        for vp in self._voices:
            if vp.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    vp.proc.kill()
        self.stop_server()
        if self._coturn is not None:
            stop_process(self._coturn)
            self._coturn = None
        if self.stage is not None:
            self.stage.close()
            self.stage = None
        for ns in reversed(self._made):
            delete_namespace(ns)
        self._made.clear()

    def impair(self, profiles: dict[str, Profile], seed: int = 0) -> Stage:
        """Impair the homes' access links in the Internet namespace (tests/support/impair):
        ``profiles`` by direction ``up_a``, ``down_a``, ``up_b``, ``down_b`` (home to home, a
        packet crosses its sender's up and its receiver's down; to the servers, one of them).
        Starts the stage on first use; call again to change the profiles."""
        if self.stage is None:
            homes: dict[str, tuple[str, str]] = {}
            for home in ("a", "b"):
                _, host, _, bits = DIRECT_LAN[home]
                reach = f"{WAN[home][1]}/30" if self.nat else f"{host}/{bits}"
                homes[home] = (f"to{home}", str(ipaddress.ip_network(reach, strict=False)))
            self.stage = Stage(self.inet, per_link(homes), local=True)
            self.stage.start()
        self.stage.configure(profiles, seed=seed)
        return self.stage

    async def stop_voices(self) -> None:
        for vp in self._voices:
            if vp.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    vp.proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(vp.proc.wait(), 5)
            if vp._reader is not None:
                vp._reader.cancel()

    # ---- building ----------------------------------------------------------------------------

    def _ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._made.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")

    def _veth(self, ns1: str, if1: str, ns2: str, if2: str) -> None:
        _run("ip", "link", "add", if1, "netns", ns1, "type", "veth", "peer", "name", if2,
             "netns", ns2)  # fmt: skip
        self.run(ns1, "ip", "link", "set", if1, "up")
        self.run(ns2, "ip", "link", "set", if2, "up")

    def _build(self) -> None:
        for ns in (self.inet, *self.routers.values(), *self.hosts.values()):
            self._ns(ns)
        inet = self.inet
        for ip in (SIGNALING_IP, TURN_IP):
            self.run(inet, "ip", "addr", "add", f"{ip}/32", "dev", "lo")
        self.sysctl(inet, "net.ipv4.ip_forward=1")
        homes: tuple[Home, Home] = ("a", "b")
        for home in homes:
            router, host = self.routers[home], self.hosts[home]
            side, wan = WAN[home]
            self._veth(inet, f"to{home}", router, "wan")
            self.run(inet, "ip", "addr", "add", f"{side}/30", "dev", f"to{home}")
            self.run(router, "ip", "addr", "add", f"{wan}/30", "dev", "wan")
            self.run(router, "ip", "route", "add", "default", "via", side)
            self.sysctl(router, "net.ipv4.ip_forward=1")
            self._veth(router, "lan", host, "eth0")
            a = self.addressing(home)
            self.run(router, "ip", "addr", "add", f"{a.router_lan}/{a.bits}", "dev", "lan")
            self.sysctl(host, "net.ipv4.conf.eth0.promote_secondaries=1")
            self.run(host, "ip", "addr", "add", f"{a.host}/{a.bits}", "dev", "eth0")
            self.run(host, "ip", "route", "add", "default", "via", a.router_lan)
            if self.nat:
                masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
                if self.variant == "symmetric":
                    masquerade.append("--random-fully")
                self.iptables(router, *masquerade)
                # A home router's firewall: unsolicited packets from the Internet are dropped
                # before conntrack confirms them. Without this, a peer's first ICE check
                # (arriving before our own went out) leaves a conntrack entry that takes our
                # mapping's tuple, MASQUERADE then picks another port, and an endpoint-
                # independent NAT behaves like a symmetric one (simultaneous-open race).
                self.iptables(router, "-A", "INPUT", "-i", "wan", "-m", "conntrack",
                              "--ctstate", "NEW,INVALID", "-j", "DROP")  # fmt: skip
            else:
                subnet = ipaddress.ip_interface(f"{a.router_lan}/{a.bits}").network
                self.run(inet, "ip", "route", "add", str(subnet), "via", wan)
        if self.variant == "udp_blocked":
            self.iptables(self.routers["b"], "-A", "FORWARD", "-i", "lan", "-p", "udp",
                          "!", "--dport", "53", "-j", "DROP")  # fmt: skip
        self._install_counters()

    def _install_counters(self) -> None:
        """Counting rules (no target) in the public namespace; read with :meth:`counters`."""
        lo, hi = RELAY_PORTS
        rules = {
            "signaling_udp": ["INPUT", "-d", SIGNALING_IP, "-p", "udp"],
            "signaling_tcp": ["INPUT", "-d", SIGNALING_IP, "-p", "tcp"],
            "turn_udp": ["INPUT", "-d", TURN_IP, "-p", "udp", "--dport", str(TURN_PORT)],
            "turn_tcp": ["INPUT", "-d", TURN_IP, "-p", "tcp", "--dport", str(TURN_PORT)],
            "turn_tls": ["INPUT", "-d", TURN_IP, "-p", "tcp", "--dport", str(TURNS_PORT)],
            "relay_udp": ["INPUT", "-d", TURN_IP, "-p", "udp", "--dport", f"{lo}:{hi}"],
            # Home to home, not through coturn, counted once (not again as it leaves the
            # impairment stage's TUN devices) and not to the servers (behind the stage too).
            "peer_udp": ["FORWARD", "-p", "udp", "!", "-o", "imp-+", "!", "-s", "203.0.113.0/24"],
        }
        for name, (chain, *spec) in rules.items():
            self.iptables(self.inet, "-A", chain, *spec, "-m", "comment", "--comment", name)

    def _pki(self) -> None:
        pki = self.workdir / "pki"
        self.ca = TestCA.create(pki, "lab-ca")
        self.signaling_cert = self.ca.issue(
            pki, "signaling", dns=["signaling.lab.test"], ips=[SIGNALING_IP]
        )
        self.turn_cert = self.ca.issue(pki, "turn", dns=["turn.lab.test"], ips=[TURN_IP])

    # ---- services ----------------------------------------------------------------------------

    def start_coturn(self) -> None:
        lo, hi = RELAY_PORTS
        conf = self.workdir / "turnserver.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listening-ip={TURN_IP}",
                    f"relay-ip={TURN_IP}",
                    f"listening-port={TURN_PORT}",
                    f"tls-listening-port={TURNS_PORT}",
                    f"cert={self.turn_cert.cert}",
                    f"pkey={self.turn_cert.key}",
                    f"min-port={lo}",
                    f"max-port={hi}",
                    "use-auth-secret",
                    f"static-auth-secret={self.turn_secret}",
                    "realm=lab.test",
                    "fingerprint",
                    "no-cli",
                    "no-dtls",
                    "no-multicast-peers",
                    "denied-peer-ip=10.0.0.0-10.255.255.255",
                    "denied-peer-ip=172.16.0.0-172.31.255.255",
                    "denied-peer-ip=192.168.0.0-192.168.255.255",
                    f"pidfile={self.workdir / 'turnserver.pid'}",
                    "no-stdout-log",
                    f"log-file={self.coturn_log}",
                    "simple-log",
                    "",
                ]
            )
        )
        self._coturn = self.popen(self.inet, "turnserver", "-c", str(conf))
        self._wait_listening(
            self._coturn,
            [f"udp:{TURN_IP}:{TURN_PORT}", f"tcp:{TURN_IP}:{TURN_PORT}",
             f"tcp:{TURN_IP}:{TURNS_PORT}"],
            self.coturn_log,
        )  # fmt: skip

    def server_env(self) -> dict[str, str]:
        p = "VOICE_SIGNALING_"
        env = {
            p + "HOST": SIGNALING_IP,
            p + "PORT": str(SIGNALING_PORT),
            p + "HTTP_HOST": "127.0.0.1",
            p + "HTTP_PORT": str(HTTP_PORT),
            p + "DB": str(self.workdir / "registry.sqlite3"),
            p + "NAME": "signaling.lab.test",
            p + "SERVER_ID": SERVER_ID,
            p + "TLS_CERT": self.signaling_cert.cert,
            p + "TLS_KEY": self.signaling_cert.key,
            p + "PING_INTERVAL": str(self.ping_interval),
            p + "PING_TIMEOUT": str(self.ping_timeout),
            p + "REGISTRATION_IP_BURST": "1000",
            p + "LOOKUP_BURST": "1000",
            p + "TURN_BURST": "1000",
            p + "TURN_PER_MINUTE": "600",
        }
        if self.turn:
            env[p + "TURN_SECRET"] = self.turn_secret
            env[p + "TURN_URIS"] = ",".join(self.turn_uris)
        return env

    def start_server(self) -> None:
        """Start ``python -m signaling`` in the public namespace (same db, port and id)."""
        if self._server is not None:
            raise RuntimeError("the signaling server is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_SIGNALING_")}
        env.update(self.server_env())
        with self.server_log.open("ab") as log:
            self._server = subprocess.Popen(
                ["ip", "netns", "exec", self.inet, sys.executable, "-m", "signaling"],
                env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        self._wait_listening(
            self._server, [f"tcp:{SIGNALING_IP}:{SIGNALING_PORT}"], self.server_log
        )

    def stop_server(self) -> None:
        if self._server is not None:
            stop_process(self._server)
            self._server = None

    def restart_server(self, down_for: float = 0.0) -> None:
        self.stop_server()
        time.sleep(down_for)
        self.start_server()

    def _wait_listening(
        self, proc: subprocess.Popen[bytes], sockets: Sequence[str], log: Path
    ) -> None:
        deadline = time.monotonic() + 20
        while True:
            out = self.run(self.inet, "ss", "-ltnuH", check=False).stdout
            seen = {
                f"{fields[0]}:{fields[4]}"
                for fields in (line.split() for line in out.splitlines())
                if len(fields) >= 5
            }
            if all(s in seen for s in sockets):
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{proc.args!r} is not listening on {sockets}:\n{tail}")
            time.sleep(0.05)

    # ---- running things in namespaces --------------------------------------------------------

    def run(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in namespace ``ns`` (a name, or a home: "a" / "b" means its host)."""
        return _run("ip", "netns", "exec", self._resolve(ns), *cmd, check=check)

    def popen(self, ns: str, *cmd: str, **kw: object) -> subprocess.Popen[bytes]:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            ["ip", "netns", "exec", self._resolve(ns), *cmd], **kw
        )

    async def exec(self, ns: str, *cmd: str, **kw: object) -> asyncio.subprocess.Process:
        """An asyncio subprocess in namespace ``ns`` (``ip netns exec`` execs: pid is cmd's)."""
        return await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self._resolve(ns),
            *cmd,
            **kw,  # type: ignore[arg-type]
        )

    def _resolve(self, ns: str) -> str:
        if ns in ("a", "b"):
            return self.hosts[ns]  # type: ignore[index]
        return ns

    def iptables(self, ns: str, *args: str) -> None:
        self.run(ns, "iptables", "-w", *args)

    def sysctl(self, ns: str, setting: str) -> None:
        self.run(ns, "sysctl", "-q", "-w", setting)

    # ---- users and the voice CLI -------------------------------------------------------------

    def user(self, name: str, home: Home) -> LabUser:
        """A user on ``home``'s host with a fresh config dir (identity created now)."""
        from voice.crypto.identity import Identity

        conf = self.workdir / "homes" / home / name
        conf.mkdir(parents=True, mode=0o700)
        conf.chmod(0o700)
        Identity.load_or_create(conf / "identity.key")
        return LabUser(name, home, conf)

    def verify(self, *users: LabUser) -> None:
        """Pin and verify every pair of ``users`` on this server, as a compared SAS would."""
        from voice.crypto.contacts import ContactBook
        from voice.crypto.identity import Identity

        keys = {u.name: Identity.load_or_create(u.conf / "identity.key") for u in users}
        for u in users:
            book = ContactBook(u.conf / "contacts.json", server=self.server_url)
            for other in users:
                if other.name != u.name:
                    book.check(other.name, keys[other.name].public_key)
                    book.trust(other.name, keys[other.name].fingerprint.machine)

    async def voice(self, who: LabUser, *argv: str, stdin: bytes | None = b"") -> VoiceProc:
        """``voice --config-dir C --server wss://... --ca CA --user U argv...`` on who's host.

        ``stdin`` bytes are written and the pipe closed; None keeps it open (``send``).
        """
        verbose = ("--verbose",) if os.environ.get("NETLAB_VERBOSE") else ()  # debug logs
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"  # a hung one prints its threads (VoiceProc.finish)
        proc = await self.exec(
            who.home, sys.executable, "-m", "voice.cli", "--config-dir", str(who.conf),
            "--server", self.server_url, "--ca", str(self.ca_path), "--user", who.name,
            *verbose, *argv,
            env=env, cwd=str(REPO), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        vp = VoiceProc.attach(proc, stdin)
        self._voices.append(vp)
        return vp

    # ---- events ------------------------------------------------------------------------------

    def block(self, home: Home) -> None:
        """The home router drops everything, both ways (a dead uplink)."""
        if home in self._blocked:
            return
        for chain in ("FORWARD", "INPUT", "OUTPUT"):
            self.iptables(self.routers[home], "-I", chain, "1", "-m", "comment", "--comment",
                          "lab-outage", "-j", "DROP")  # fmt: skip
        self._blocked.add(home)

    def unblock(self, home: Home) -> None:
        if home not in self._blocked:
            return
        for chain in ("FORWARD", "INPUT", "OUTPUT"):
            self.iptables(self.routers[home], "-D", chain, "-m", "comment", "--comment",
                          "lab-outage", "-j", "DROP")  # fmt: skip
        self._blocked.discard(home)

    async def outage(self, home: Home, seconds: float) -> None:
        """Drop everything at ``home``'s router for ``seconds``, then restore it."""
        self.block(home)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.unblock(home)

    def go_dark(self, home: Home) -> None:
        """Drop everything at ``home``'s router, silently (no RST, no ICMP), for good."""
        self.block(home)
        self._blocked.discard(home)  # never restored by unblock()

    def change_address(self, home: Home) -> str:
        """Move ``home``'s host to another address (old one removed, default route re-made);
        behind a NAT this also means a new public port. Returns the new address."""
        a = self.addressing(home)
        old, new = (a.moved, a.host) if home in self._moved else (a.host, a.moved)
        host = self.hosts[home]
        self.run(host, "ip", "addr", "add", f"{new}/{a.bits}", "dev", "eth0")
        self.run(host, "ip", "addr", "del", f"{old}/{a.bits}", "dev", "eth0")
        self.run(host, "ip", "route", "replace", "default", "via", a.router_lan, "src", new)
        self._moved ^= {home}
        return new

    def drop_udp_between_homes(self) -> None:
        """The Internet drops every UDP packet from one home to the other (not to the servers)."""
        pairs: tuple[tuple[Home, Home], ...] = (("a", "b"), ("b", "a"))
        for src, dst in pairs:
            self.iptables(self.inet, "-I", "FORWARD", "1", "-p", "udp", "-s",
                          self.public_ip(src), "-d", self.public_ip(dst), "-j", "DROP")  # fmt: skip

    def counters(self) -> dict[str, int]:
        """Packets seen by the counting rules in the public namespace (see _install_counters):
        signaling_udp/tcp (to the server's address), turn_udp/tcp/tls (to coturn's ports),
        relay_udp (to coturn's relay ports), peer_udp (forwarded home to home)."""
        found: dict[str, int] = {}
        for chain in ("INPUT", "FORWARD"):
            out = self.run(self.inet, "iptables", "-w", "-nvxL", chain).stdout
            for line in out.splitlines():
                m = re.search(r"/\* (\S+) \*/", line)
                if m and line.split()[0].isdigit():
                    found[m.group(1)] = int(line.split()[0])
        return found

    def logs(self) -> str:
        """The server's and coturn's logs (tails), for assertion messages."""
        parts = []
        for path in (self.server_log, self.coturn_log):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


@contextlib.contextmanager
def netlab(variant: Variant, workdir: Path, **kw: bool | float) -> Iterator[NetLab]:
    """``with netlab("nat", tmp_path) as lab: ...`` (the same as ``with NetLab(...)``)."""
    with NetLab(variant, workdir, **kw) as lab:  # type: ignore[arg-type]
        yield lab


def server_saw(lab: NetLab) -> str:
    """A one-line summary of the counters, for messages."""
    return json.dumps(lab.counters(), sort_keys=True)
