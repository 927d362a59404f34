"""`voice id` as a user runs it: back up, restore, protect with a passphrase, then call.

Real processes (tests/voice/cli_harness.py): the `voice` command, and for the calls a real
`python -m signaling`. Passphrases come from the environment, as in a script, or are typed at
a prompt on a pseudo-terminal.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.voice.cli_harness import REPO, VOICE, VoiceProc, run_voice, signaling_server, start_voice
from voice.crypto.identity import key_file_info
from voice.exitcodes import ExitCode

pytestmark = pytest.mark.timeout(120)

HEADLESS = ("--silence", "--no-output", "--no-prompt")
BACKUP = {"VOICE_BACKUP_PASSPHRASE": "a long backup passphrase"}


def fingerprint_in(vp: VoiceProc) -> str:
    match = re.search(r"Fingerprint:  ((?:[A-Z2-7]{4} ){12}[A-Z2-7]{4})", vp.stdout)
    assert match is not None, vp.stdout + vp.stderr
    return match.group(1)


def sas_of(vp: VoiceProc) -> str:
    for line in vp.lines:
        if line.startswith("Security code (SAS):"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no SAS shown:\n{vp.stdout}{vp.stderr}")


async def test_export_then_import_in_a_fresh_config_dir_shows_the_same_fingerprint(
    tmp_path: Path,
) -> None:
    old, new, backup = tmp_path / "old-laptop", tmp_path / "new-laptop", tmp_path / "me.backup"
    created = await run_voice(old, "id")
    exported = await run_voice(old, "id", "--export", str(backup), env=BACKUP)
    assert exported.proc.returncode == ExitCode.OK, exported.stderr
    assert BACKUP["VOICE_BACKUP_PASSPHRASE"] not in exported.stdout + exported.stderr
    imported = await run_voice(new, "id", "--import", str(backup), env=BACKUP)
    assert imported.proc.returncode == ExitCode.OK, imported.stderr
    shown = await run_voice(new, "id")
    assert fingerprint_in(created) == fingerprint_in(exported) == fingerprint_in(imported)
    assert fingerprint_in(shown) == fingerprint_in(created)
    assert (new / "identity.key").stat().st_mode & 0o777 == 0o600
    again = await run_voice(old, "id", "--export", str(backup), env=BACKUP)
    assert again.proc.returncode == ExitCode.USAGE and "never overwrites" in again.stderr
    no_pass = await run_voice(tmp_path / "third", "id", "--import", str(backup))
    assert no_pass.proc.returncode == ExitCode.USAGE
    assert "VOICE_BACKUP_PASSPHRASE" in no_pass.stderr
    assert not (tmp_path / "third" / "identity.key").exists()


async def test_a_protected_identity_calls_and_listens_with_voice_passphrase(
    tmp_path: Path,
) -> None:
    secret = {"alice": "alice's long passphrase", "bob": "bob's long passphrase"}
    for user, passphrase in secret.items():
        vp = await run_voice(
            tmp_path / user, "id", "--set-passphrase", env={"VOICE_NEW_PASSPHRASE": passphrase}
        )
        assert vp.proc.returncode == ExitCode.OK, vp.stderr
        assert key_file_info(tmp_path / user / "identity.key").protected
        shown = await run_voice(tmp_path / user, "id")  # shown without the passphrase
        assert "protected by a passphrase" in shown.stdout
    async with signaling_server() as url:
        # no passphrase and no terminal: a clear usage error before anything is sent
        vp = await run_voice(tmp_path / "bob", "listen", *HEADLESS, server=url, user="bob")
        assert vp.proc.returncode == ExitCode.USAGE
        assert "set VOICE_PASSPHRASE" in vp.stderr and "Traceback" not in vp.stderr
        vp = await run_voice(tmp_path / "bob", "listen", *HEADLESS, server=url, user="bob",
                             env={"VOICE_PASSPHRASE": secret["alice"]})  # fmt: skip
        assert vp.proc.returncode == ExitCode.LOCAL_ERROR and "wrong passphrase" in vp.stderr
        bob = await start_voice(tmp_path / "bob", "listen", "--auto-answer", *HEADLESS,
                                server=url, user="bob", stdin=b"",
                                env={"VOICE_PASSPHRASE": secret["bob"]})  # fmt: skip
        await bob.wait_for("Waiting for a call")
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration", "1",
                                server=url, user="alice",
                                env={"VOICE_PASSPHRASE": secret["alice"]})  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        assert await bob.stop_listening() == ExitCode.OK, bob.stdout + bob.stderr
    assert sas_of(alice) == sas_of(bob)
    for vp in (alice, bob):
        assert not any(p in vp.stdout + vp.stderr for p in secret.values())


def _run_on_a_terminal(conf: Path, argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run ``voice`` with a pseudo-terminal as stdin/stdout/stderr (and no other controlling
    terminal), answering each passphrase prompt in turn; returns the exit code and the output."""
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_")}
    proc = subprocess.Popen(
        [*VOICE, "--config-dir", str(conf), *argv], stdin=slave, stdout=slave, stderr=slave,
        cwd=REPO, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen, pending, deadline = b"", list(answers), time.monotonic() + 30
    answered = 0  # where the output stood when we last answered
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and seen[answered:].endswith(b": "):  # a new prompt, echo now off
                os.write(master, pending.pop(0).encode() + b"\n")
                answered = len(seen)
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=30), seen.decode("utf-8", errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_passphrases_are_asked_on_the_terminal_without_echo(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    code, out = _run_on_a_terminal(
        conf, ["id", "--set-passphrase"], ["typed secret 1", "typed secret 1"]
    )
    assert code == ExitCode.OK, out
    assert "New passphrase for" in out and "The same passphrase again:" in out
    assert "typed secret 1" not in out  # getpass turned the echo off
    assert key_file_info(conf / "identity.key").protected
    code, out = _run_on_a_terminal(conf, ["id", "--remove-passphrase"], ["wrong guess 12"])
    assert code == ExitCode.LOCAL_ERROR and "wrong passphrase" in out
    assert key_file_info(conf / "identity.key").protected
    code, out = _run_on_a_terminal(conf, ["id", "--remove-passphrase"], ["typed secret 1"])
    assert code == ExitCode.OK, out
    assert not key_file_info(conf / "identity.key").protected
