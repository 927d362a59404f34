"""End to end, as two people would use it: two call screens in two real terminals (tmux), a real
`python -m signaling`, real media, and a test that presses the keys and reads the screens.

`voice listen` and `voice call bob` run in a terminal, so each opens the call screen by itself
(no `ui` command, no `--plain`). Bob's screen rings; he accepts; both see the same SAS and each
other's tone on the peer meter; Alice verifies and mutes (Bob's meter falls silent), hangs up;
both see why it ended; Bob's home lists the call; both quit with exit code 0.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.voice.cli_harness import REPO, signaling_server

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

WAIT = 30.0
SIZE = ("100", "34")


class Terminal:
    """One tmux session on a private tmux server: a command in a real terminal."""

    def __init__(self, socket: str, name: str, command: list[str]) -> None:
        self.socket, self.name = socket, name
        shell = shlex.join(command) + "; echo EXIT=$?; sleep 600"  # keep the pane to read it
        self._tmux("new-session", "-d", "-s", name, "-x", SIZE[0], "-y", SIZE[1], shell)

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                             timeout=10, check=True, cwd=REPO)  # fmt: skip
        return out.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def press(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    async def wait_for(self, check: Callable[[str], bool] | str, what: str = "") -> str:
        """The screen once ``check`` holds for it (or shows the text ``check``)."""
        test = (lambda s: check in s) if isinstance(check, str) else check
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            shown = self.screen()
            if test(shown):
                return shown
            if loop.time() > deadline:
                raise AssertionError(f"{self.name}: no {what or check!r} on the screen:\n{shown}")
            await asyncio.sleep(0.2)


@pytest.fixture
def tmux() -> Iterator[str]:
    socket = f"voice-test-{uuid.uuid4().hex[:8]}"
    yield socket
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)


def sas_words(screen: str) -> str:
    """The SAS words: the first line inside the SAS box."""
    lines = screen.splitlines()
    top = next(i for i, line in enumerate(lines) if "┏" in line)
    return lines[top + 1].strip(" ┃")


def sas_on_screen(peer: str) -> Callable[[str], bool]:
    """The call connected, its SAS is on the screen and verifying it is offered."""

    def check(screen: str) -> bool:
        return (f"Read the words to {peer}" in screen and "SAS matches: verify" in screen
                and "Connected: audio is end-to-end encrypted" in screen)  # fmt: skip

    return check


def peer_level(screen: str) -> float | None:
    """The peer meter's level in dBFS (None before any audio)."""
    found = re.search(r"peer [█░]+\s+(-?\d+) dB", screen)
    return float(found.group(1)) if found else None


def voice(config: Path, url: str, user: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "voice.cli", "--config-dir", str(config), "--server", url,
            "--user", user, *args]  # fmt: skip


async def test_two_call_screens_call_each_other_and_the_keys_work(
    tmux: str, tmp_path: Path
) -> None:
    async with signaling_server() as url:
        bob = Terminal(tmux, "bob", voice(tmp_path / "bob", url, "bob", "listen", "--tone",
                                          "660", "--no-output"))  # fmt: skip
        await bob.wait_for(lambda s: "You are bob" in s and f"{url}: online" in s, "online")
        alice = Terminal(tmux, "alice", voice(tmp_path / "alice", url, "alice", "call", "bob",
                                              "--tone", "440", "--no-output"))  # fmt: skip

        ringing = await bob.wait_for("Incoming call from alice")
        assert "NEW" in ringing  # first call: a key never seen before
        bob.press("a")
        # The SAS is on the screen (and verifying offered) once the first audio authenticated
        shown = {t.name: await t.wait_for(sas_on_screen(peer), "the SAS")
                 for t, peer in ((alice, "bob"), (bob, "alice"))}  # fmt: skip
        words = sas_words(shown["alice"])
        assert len(words.split()) == 3 and words == sas_words(shown["bob"])
        for t in (alice, bob):  # each hears the other's tone
            await t.wait_for(lambda s: (peer_level(s) or -99.0) > -40.0, "the peer's tone")

        alice.press("v")
        await alice.wait_for("VERIFIED")
        alice.press("m")
        await alice.wait_for("MUTED: the peer hears silence")
        await bob.wait_for(lambda s: (peer_level(s) or 0.0) <= -50.0, "silence from alice")
        assert (peer_level(alice.screen()) or -99.0) > -40.0  # bob still talks to her

        alice.press("q")
        await alice.wait_for("Call ended: you hung up.")
        await bob.wait_for("Call ended: alice hung up.")
        bob.press("Enter")
        home = await bob.wait_for(
            lambda s: re.search(r"<- alice\s+00:\d\d", s) is not None,
            "the call in the recent calls, answered, with its length",
        )
        assert re.search(r"alice\s+UNVERIFIED\s+1 call", home), home
        for t in (alice, bob):
            t.press("q")
        for t in (alice, bob):
            await t.wait_for("EXIT=0")
