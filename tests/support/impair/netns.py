"""The few namespace commands the stage and its link need (iproute2 through subprocess)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; with ``check``, a failure raises OSError carrying the command's stderr."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise OSError(f"{' '.join(cmd)}: {exc}") from exc
    if check and done.returncode != 0:
        raise OSError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *cmd, check=check)


def delete(ns: str) -> None:
    """Kill what still runs in ``ns``, then delete it (no error if it is already gone)."""
    for _ in range(3):
        pids = [int(p) for p in run("ip", "netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    run("ip", "netns", "del", ns, check=False)


def remove_leftovers(pattern: re.Pattern[str]) -> list[str]:
    """Delete namespaces whose name matches ``pattern`` (group 1: the creator's pid) and whose
    creator is gone: what a killed run left behind. Returns their names."""
    gone = []
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = pattern.match(name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its creator still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        delete(name)
        gone.append(name)
    return gone
