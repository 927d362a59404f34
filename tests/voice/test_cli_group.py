"""`voice group` as its users run it: three real `voice` processes, a real `python -m signaling`
and a real Janus. bob and carol make alice a verified contact with `voice trust` (only contacts
may invite); alice starts a group and invites both at once; they answer (bob automatically, carol
at the prompt) and all three print the same group security code. alice removes bob, the code
changes and everyone left says so; bob joins again from a new process (its messages must not
look like replays of its first session); alice leaves, which ends the call for everyone, and
every process exits 0. Each one records the mix it heard: the others' tones must be in it.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.janus import running_janus
from tests.voice.cli_harness import VoiceProc, run_voice, signaling_server, start_voice
from voice.audio.base import SAMPLE_RATE
from voice.audio.wavfile import load_wav
from voice.cli import main
from voice.crypto.identity import Identity
from voice.exitcodes import ExitCode
from voice.net.client import SignalingClient

pytestmark = pytest.mark.timeout(120)

TONES = {"alice": 550.0, "bob": 440.0, "carol": 660.0}
CODE = re.compile(r"Group security code \(epoch (\d+)\): (.+)")


def band_share(wav: Path, hz: float) -> float:
    """The largest share of energy within 20 Hz of ``hz`` in any 1 s window of the recording
    (a member is in the mix only while it is in the call)."""
    x = load_wav(wav, SAMPLE_RATE).astype(np.float64)
    best = 0.0
    for start in range(0, max(len(x) - SAMPLE_RATE, 0) + 1, SAMPLE_RATE // 2):
        power = np.abs(np.fft.rfft(x[start : start + SAMPLE_RATE])) ** 2
        freqs = np.fft.rfftfreq(min(SAMPLE_RATE, len(x) - start), 1 / SAMPLE_RATE)
        best = max(best, float(power[np.abs(freqs - hz) < 20].sum() / max(power.sum(), 1e-9)))
    return best


async def code_at(vp: VoiceProc, epoch: int) -> str:
    try:
        line = await vp.wait_for(f"Group security code (epoch {epoch})", 30)
    except TimeoutError as exc:
        exc.add_note(f"no code for epoch {epoch}; it printed:\n{vp.stdout}")
        raise
    found = CODE.search(line)
    assert found is not None, line
    return found.group(2).strip()


@pytest.fixture
def started() -> Iterator[list[VoiceProc]]:
    """Every `voice` process a test starts; any still running at its end is killed (a failed
    assertion must not leave a group call running)."""
    procs: list[VoiceProc] = []
    yield procs
    for vp in procs:
        if vp.proc.returncode is None:
            vp.proc.kill()


async def test_a_group_call_from_the_command_line(tmp_path: Path, started: list[VoiceProc]) -> None:
    homes = {name: tmp_path / name for name in TONES}
    alice = Identity.load_or_create(homes["alice"] / "identity.key")

    def audio(name: str, take: int = 1) -> tuple[str, ...]:
        return ("--tone", str(TONES[name]), "--record", str(tmp_path / f"{name}{take}.wav"))

    async with signaling_server() as url, running_janus(tmp_path) as janus:
        client = await SignalingClient.connect(url, "alice", alice.public_key, alice.sign)
        await client.close()  # alice's name is hers: the server has her key to look up
        for name in ("bob", "carol"):
            done = await run_voice(homes[name], "trust", "alice", alice.fingerprint.machine,
                                   server=url, user=name)  # fmt: skip
            assert "alice is now verified" in done.stdout, done.stdout + done.stderr
        bob = await start_voice(homes["bob"], "group", "join", "--auto-accept", *audio("bob"),
                                server=url, user="bob", stdin=b"")  # fmt: skip
        carol = await start_voice(homes["carol"], "group", "join", *audio("carol"),
                                  server=url, user="carol")  # fmt: skip
        started += [bob, carol]
        await bob.wait_for("Waiting for an invite")
        await carol.wait_for("Waiting for an invite")
        creator = await start_voice(homes["alice"], "group", "start", "--sfu", janus.url,
                                    "--invite", "bob", "--invite", "carol", *audio("alice"),
                                    server=url, user="alice")  # fmt: skip
        started.append(creator)
        carol.send("y\n")  # her answer to the question (waits in the pipe until it is asked)
        codes = {await code_at(vp, 2) for vp in (creator, bob, carol)}
        assert len(codes) == 1, "\n".join(vp.stdout for vp in (creator, bob, carol))
        assert "alice invites you to a group call. Join? [y/N]" in carol.stdout
        await creator.wait_for("Members (3): alice (creator), bob, carol")
        for vp, others in ((creator, "bob carol"), (bob, "alice carol"), (carol, "alice bob")):
            for name in others.split():  # the screen says whom it hears: media flows
                await vp.wait_for(f"Hearing {name}.", 30)
        await asyncio.sleep(1.5)  # "Hearing" may be the silence sent before a member's tone

        creator.send("remove bob\n")
        assert await bob.finish(30) == ExitCode.OK
        assert "Group call over (removed)" in bob.stdout
        for vp in (creator, carol):
            await vp.wait_for("bob left.")
            await vp.wait_for("The code changed because the members changed")
        assert await code_at(creator, 3) == await code_at(carol, 3) != codes.pop()

        bob = await start_voice(homes["bob"], "group", "join", "--auto-accept",
                                *audio("bob", 2), server=url, user="bob", stdin=b"")  # fmt: skip
        started.append(bob)
        await bob.wait_for("Waiting for an invite")
        creator.send("invite bob\n")
        codes = {await code_at(vp, 4) for vp in (creator, bob, carol)}
        assert len(codes) == 1, "\n".join(vp.stdout for vp in (creator, bob, carol))
        await bob.wait_for("Members (3)")
        for name in ("alice", "carol"):
            await bob.wait_for(f"Hearing {name}.", 30)
        await creator.wait_for("Hearing bob.")  # announced again: he left and came back
        await asyncio.sleep(1.5)

        creator.send("leave\n")
        for vp in (creator, bob, carol):
            assert await vp.finish(30) == ExitCode.OK, vp.stdout + vp.stderr
        assert "Group call over (ended)" in carol.stdout and "Group call over (ended)" in bob.stdout
        for vp in (creator, bob, carol):
            assert "Traceback" not in vp.stderr, vp.stderr

    heard = {
        "alice": band_share(tmp_path / "alice1.wav", TONES["bob"]),
        "carol from alice": band_share(tmp_path / "carol1.wav", TONES["alice"]),
        "carol from bob": band_share(tmp_path / "carol1.wav", TONES["bob"]),
        "bob": band_share(tmp_path / "bob2.wav", TONES["carol"]),
    }
    assert all(share > 0.2 for share in heard.values()), heard  # equal tones: about 0.5
    own = {name: band_share(tmp_path / f"{name}1.wav", TONES[name]) for name in TONES}
    assert all(share < 0.05 for share in own.values()), own  # nobody hears itself


async def test_a_group_call_whose_sfu_dies_ends_cleanly_everywhere(
    tmp_path: Path, started: list[VoiceProc]
) -> None:
    """Janus is killed mid-call: no audio can flow any more. The creator says so, ends the call
    for everyone and exits CALL_FAILED; bob ends too, within seconds (nothing hangs, no
    traceback)."""
    alice = Identity.load_or_create(tmp_path / "alice" / "identity.key")
    async with signaling_server() as url, running_janus(tmp_path) as janus:
        client = await SignalingClient.connect(url, "alice", alice.public_key, alice.sign)
        await client.close()
        await run_voice(tmp_path / "bob", "trust", "alice", alice.fingerprint.machine,
                        server=url, user="bob")  # fmt: skip
        bob = await start_voice(tmp_path / "bob", "group", "join", "--auto-accept", "--silence",
                                "--no-output", server=url, user="bob")  # fmt: skip
        started.append(bob)
        await bob.wait_for("Waiting for an invite")
        creator = await start_voice(tmp_path / "alice", "group", "start", "--sfu", janus.url,
                                    "--invite", "bob", "--silence", "--no-output",
                                    server=url, user="alice")  # fmt: skip
        started.append(creator)
        for vp, other in ((creator, "bob"), (bob, "alice")):
            await vp.wait_for(f"Hearing {other}.", 30)
        os.kill(janus.pid, signal.SIGKILL)
        assert await creator.finish(15) == ExitCode.CALL_FAILED, creator.stdout + creator.stderr
        assert "Lost the connection to the SFU (Janus)" in creator.stdout
        # bob notices it himself, or first hears the end the creator sent as it gave up
        code = await bob.finish(15)
        lost = "Lost the connection to the SFU (Janus)" in bob.stdout
        assert (code, lost) in ((ExitCode.CALL_FAILED, True), (ExitCode.OK, False)), bob.stdout
        assert lost or "Group call over (ended)" in bob.stdout, bob.stdout
        for vp in (creator, bob):
            assert "Traceback" not in vp.stderr, vp.stderr


async def test_a_withdrawn_invite_ends_the_question_and_ctrl_c_stops_it(
    tmp_path: Path, started: list[VoiceProc]
) -> None:
    """carol is asked and does not answer: alice withdraws the invite, and carol's question
    ends at once (exit CALL_FAILED); asked again, Ctrl-C stops it (exit 0), declining."""
    alice = Identity.load_or_create(tmp_path / "alice" / "identity.key")
    async with signaling_server() as url, running_janus(tmp_path) as janus:
        client = await SignalingClient.connect(url, "alice", alice.public_key, alice.sign)
        await client.close()
        await run_voice(tmp_path / "carol", "trust", "alice", alice.fingerprint.machine,
                        server=url, user="carol")  # fmt: skip
        creator = await start_voice(tmp_path / "alice", "group", "start", "--sfu", janus.url,
                                    "--silence", "--no-output",
                                    server=url, user="alice")  # fmt: skip
        started.append(creator)
        await creator.wait_for("Group call open")
        for ending in ("withdraw", "interrupt"):
            carol = await start_voice(tmp_path / "carol", "group", "join", "--silence",
                                      "--no-output", server=url, user="carol")  # fmt: skip
            started.append(carol)
            await carol.wait_for("Waiting for an invite")
            creator.send("invite carol\n")
            await creator.wait_for("Invited carol.")
            await asyncio.sleep(1.0)  # the invite reaches carol, who is now asked
            if ending == "withdraw":
                creator.send("remove carol\n")
                assert await carol.finish(10) == ExitCode.CALL_FAILED, carol.stdout
                assert "The invite was withdrawn." in carol.stdout
            else:
                carol.interrupt()
                assert await carol.finish(10) == ExitCode.OK, carol.stdout
                assert "Stopped." in carol.stdout
            assert "alice invites you to a group call. Join?" in carol.stdout
            assert "Traceback" not in carol.stderr, carol.stderr
        creator.send("leave\n")
        assert await creator.finish(15) == ExitCode.OK


@pytest.mark.parametrize(
    ("sfu", "why"),
    [
        (None, "needs --sfu"),
        ("http://janus.example/", "is a wss:// URL"),
        ("ws://10.1.2.3:8188/", "refusing plain"),  # the pin and addresses in the clear
    ],
)
def test_start_refuses_a_missing_or_plain_sfu_before_logging_in(
    tmp_path: Path, sfu: str | None, why: str
) -> None:
    err = io.StringIO()
    argv = ["--config-dir", str(tmp_path), "--user", "alice", "group", "start"]
    code = main([*argv, *(["--sfu", sfu] if sfu else [])], out=io.StringIO(), err=err)
    assert code == ExitCode.USAGE and why in err.getvalue(), err.getvalue()
