"""Run a private Janus (VideoRoom over WebSockets only) in a work folder, for tests and the demo.

Everything Janus reads is generated in ``workdir``: ``janus.jcfg``, one transport config, one
plugin config, and folders holding a single symlink each (the VideoRoom plugin, the WebSocket
transport), so no other plugin, transport, event handler or logger loads. The API listens on
127.0.0.1 on a free port; there is no admin API, no STUN or TURN, no IPv6, no ICE-TCP.

ICE: Janus 1.1 never gathers on loopback interfaces (``janus_ice_setup_local`` skips
IFF_LOOPBACK), so ``ice_enforce_list`` names one local IPv4 address, by default the first one
aioice (hence aiortc) gathers on too. Packets between two sockets of this host never leave it
(the kernel routes them through ``lo``). RTP ports come from a random block of 200
(``rtp_port_range``); libnice skips ports in use. Logs go to ``workdir/janus.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aioice.ice import get_host_addresses

from voice.group.janus import VIDEOROOM, JanusError, server_info

__all__ = ["JanusServer", "JanusStartError", "run_janus"]

# Where distributions and ``make install`` put Janus's plugins/ and transports/ folders.
LIB_DIRS: Final = (
    "/usr/lib/*/janus",
    "/usr/lib/janus",
    "/usr/local/lib/janus",
    "/opt/janus/lib/janus",
)
PLUGIN: Final = "libjanus_videoroom.so"
TRANSPORT: Final = "libjanus_websockets.so"
PORT_BLOCK: Final = 200


class JanusStartError(JanusError):
    """Janus is not installed, or did not start answering in time; the message ends with the
    tail of its log."""


@dataclass(frozen=True)
class JanusServer:
    """A running Janus: its API ``url``, the address its ICE candidates use, its log."""

    url: str
    ice_ip: str
    log: Path
    pid: int


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lib_dir() -> Path:
    for pattern in LIB_DIRS:
        for found in sorted(Path("/").glob(pattern.lstrip("/"))):
            if (found / "plugins" / PLUGIN).exists() and (
                found / "transports" / TRANSPORT
            ).exists():
                return found
    raise JanusStartError(f"no {PLUGIN} and {TRANSPORT} under {', '.join(LIB_DIRS)}")


def _ice_ip() -> str:
    addresses = get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not addresses:
        raise JanusStartError(
            "no non-loopback IPv4 address for ICE: Janus 1.1 never gathers on loopback"
        )
    return str(addresses[0])


def _q(text: str | Path) -> str:
    return json.dumps(str(text))  # a libconfig string literal


def _write_config(
    workdir: Path, lib_dir: Path, *, port: int, ice_ip: str, rtp: tuple[int, int], debug: int
) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    for folder, name in (("plugins", PLUGIN), ("transports", TRANSPORT)):
        (workdir / folder).mkdir(exist_ok=True)
        link = workdir / folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(lib_dir / folder / name)
    for folder in ("events", "loggers"):
        (workdir / folder).mkdir(exist_ok=True)
    jcfg = workdir / "janus.jcfg"
    jcfg.write_text(
        f"""general: {{
    configs_folder = {_q(workdir)}
    plugins_folder = {_q(workdir / "plugins")}
    transports_folder = {_q(workdir / "transports")}
    events_folder = {_q(workdir / "events")}
    loggers_folder = {_q(workdir / "loggers")}
    log_to_stdout = false
    log_to_file = {_q(workdir / "janus.log")}
    debug_level = {debug}
    debug_timestamps = true
    debug_colors = false
    server_name = "voice-group"
    session_timeout = 60
    hide_dependencies = true
    exit_on_dl_error = true
}}
media: {{
    ipv6 = false
    rtp_port_range = "{rtp[0]}-{rtp[1]}"
}}
nat: {{
    ice_enforce_list = {_q(ice_ip)}
    ice_tcp = false
    full_trickle = false
    ignore_mdns = true
    nice_debug = false
}}
plugins: {{
}}
transports: {{
}}
events: {{
    broadcast = false
}}
"""
    )
    (workdir / "janus.transport.websockets.jcfg").write_text(
        f"""general: {{
    json = "compact"
    ws = true
    ws_port = {port}
    ws_ip = "127.0.0.1"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
"""
    )
    (workdir / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return jcfg


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM (Janus then closes its sessions), SIGKILL after ``grace`` seconds."""
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def run_janus(
    workdir: Path,
    *,
    ice_ip: str | None = None,
    binary: str = "janus",
    lib_dir: Path | None = None,
    debug_level: int = 4,
    start_timeout: float = 20.0,
    stop_grace: float = 5.0,
) -> AsyncIterator[JanusServer]:
    """Start Janus with a generated configuration in ``workdir``; stop it on exit.

    Raises :class:`JanusStartError` (with the log's tail) if it is missing or does not answer
    ``info`` with the VideoRoom loaded within ``start_timeout`` seconds."""
    executable = shutil.which(binary)
    if executable is None:
        raise JanusStartError(f"{binary!r} is not installed: run scripts/setup.sh")
    port = _free_tcp_port()
    low = random.randrange(20_000, 60_000 - PORT_BLOCK, PORT_BLOCK)
    ip = ice_ip or _ice_ip()
    jcfg = _write_config(
        workdir,
        lib_dir or _lib_dir(),
        port=port,
        ice_ip=ip,
        rtp=(low, low + PORT_BLOCK - 1),
        debug=debug_level,
    )
    log = workdir / "janus.log"
    with (workdir / "janus.out").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            executable,
            f"--config={jcfg}",
            f"--configs-folder={workdir}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        url = f"ws://127.0.0.1:{port}/"
        await _wait_ready(proc, url, log, start_timeout)
        yield JanusServer(url, ip, log, proc.pid)
    finally:
        await _stop(proc, stop_grace)


async def _wait_ready(
    proc: asyncio.subprocess.Process, url: str, log: Path, start_timeout: float
) -> None:
    deadline = time.monotonic() + start_timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            break
        try:
            info = await server_info(url, reply_timeout=2.0)
        except JanusError as exc:
            last = exc
            await asyncio.sleep(0.1)
            continue
        if VIDEOROOM in (info.get("plugins") or {}):
            return
        last = JanusError(f"the VideoRoom plugin did not load: {sorted(info.get('plugins') or {})}")
        break
    out = log.with_name("janus.out")  # what Janus printed before its log file was open
    raise JanusStartError(
        f"Janus did not start (exit code {proc.returncode}, last error {last}); "
        f"{out} ends with:\n{_tail(out)}\n{log} ends with:\n{_tail(log)}"
    )


async def _serve_until_stopped(workdir: Path) -> None:
    async with run_janus(workdir) as janus:
        print(f"Janus (VideoRoom) at {janus.url}; its log: {janus.log}. Ctrl-C stops it.")
        print(f"For example: voice group start --sfu {janus.url} --invite USER", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    """``python -m voice.group.janusd [DIR]``: a local Janus for trying group calls by hand,
    configured as the tests and the demo configure theirs (loopback only, ws://)."""
    import sys
    import tempfile

    if len(sys.argv) > 1:
        workdir = Path(sys.argv[1])
        workdir.mkdir(parents=True, exist_ok=True)
        asyncio.run(_serve_until_stopped(workdir))
        return
    with tempfile.TemporaryDirectory(prefix="voice-janus-") as tmp:
        asyncio.run(_serve_until_stopped(Path(tmp)))


if __name__ == "__main__":
    main()
