"""`voice listen` is a phone that stays online: real processes against a real `python -m signaling`.

It answers call after call, outlives a server restart (saying so) and answers afterwards, shrugs
off garbage envelopes, reports missed calls, and ends on Ctrl-C or ``--timeout`` without an
asyncio traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.voice.cli_harness import VoiceProc, run_voice, signaling_server, start_voice
from voice.audio.base import SAMPLE_RATE
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav
from voice.crypto.identity import Identity
from voice.exitcodes import ExitCode
from voice.net.client import SignalingClient

pytestmark = pytest.mark.timeout(180)

HEADLESS = ("--silence", "--no-output", "--no-prompt")


def sas_lines(vp: VoiceProc) -> list[str]:
    return [line for line in vp.lines if line.startswith("Security code (SAS):")]


async def call_bob(tmp_path: Path, url: str) -> VoiceProc:
    alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration", "0.5",
                            server=url, user="alice")  # fmt: skip
    assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
    return alice


async def garbage_to(url: str, user: str, count: int) -> None:
    """A registered stranger sends ``user`` envelopes of random bytes (the server routes them)."""
    mallory = Identity.generate()
    async with await SignalingClient.connect(
        url, "mallory", mallory.public_key, mallory.sign
    ) as client:
        for _ in range(count):
            await client.send(user, os.urandom(300))


async def test_listen_answers_call_after_call_across_a_server_restart(tmp_path: Path) -> None:
    async with signaling_server() as url:
        port = int(url.rsplit(":", 1)[1])
        bob = await start_voice(tmp_path / "bob", "listen", "--auto-answer", *HEADLESS,
                                server=url, user="bob")  # fmt: skip
        await bob.wait_for("Waiting for a call")
        first = await call_bob(tmp_path, url)
        await bob.wait_for("Waiting for the next call")
    # the server is gone: bob's listen says so and keeps trying
    line = await bob.wait_for("offline: ")
    assert "reconnecting" in line and bob.proc.returncode is None
    async with signaling_server(port=port) as url:
        await bob.wait_for("online again", limit=25)
        await garbage_to(url, "bob", 20)  # dropped and counted; listen goes on
        second = await call_bob(tmp_path, url)
        third = await call_bob(tmp_path, url)
        assert bob.proc.returncode is None  # still listening
        bob.interrupt()
        assert await bob.finish() == ExitCode.OK, bob.stdout + bob.stderr
    assert bob.stdout.count("Incoming call from alice") == 3
    shown = sas_lines(bob)
    assert len(shown) == 3
    for alice, sas in zip((first, second, third), shown, strict=True):
        assert sas_lines(alice) == [sas]  # each call: both sides show the same code
    assert "Traceback" not in bob.stderr


async def test_listen_reports_missed_calls_and_keeps_listening(tmp_path: Path) -> None:
    async with signaling_server() as url:
        # stdin stays open: nobody answers until the test types "y"
        bob = await start_voice(tmp_path / "bob", "listen", *HEADLESS[:2], server=url,
                                user="bob")  # fmt: skip
        await bob.wait_for("Waiting for a call")
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--timeout", "1.5",
                                server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.NO_ANSWER, alice.stdout + alice.stderr
        await bob.wait_for("Missed call from alice (cancelled)")
        await bob.wait_for("Waiting for the next call")
        bob.send("y\n")  # the next call is answered at the prompt
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration",
                                "0.5", server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        bob.interrupt()
        assert await bob.finish() == ExitCode.OK, bob.stdout + bob.stderr


async def test_listen_timeout_ends_cleanly(tmp_path: Path) -> None:
    async with signaling_server() as url:
        bob = await run_voice(tmp_path / "bob", "listen", *HEADLESS, "--timeout", "1",
                              server=url, user="bob")  # fmt: skip
    assert bob.proc.returncode == ExitCode.NO_ANSWER, bob.stdout + bob.stderr
    assert "No call came." in bob.stdout
    assert "Traceback" not in bob.stderr and "never retrieved" not in bob.stderr, bob.stderr


async def test_every_call_of_a_listen_gets_its_audio_not_only_the_first(tmp_path: Path) -> None:
    """bob's listen plays the speech sample: the second caller hears it too (each call opens
    the source afresh; before, calls after the first got silence)."""
    async with signaling_server() as url:
        bob = await start_voice(tmp_path / "bob", "listen", "--auto-answer", "--play",
                                str(speech_sample()), "--no-output", "--no-prompt",
                                server=url, user="bob")  # fmt: skip
        await bob.wait_for("Waiting for a call")
        heard: list[float] = []
        for k in range(2):
            record = tmp_path / f"heard{k}.wav"
            alice = await run_voice(tmp_path / "alice", "call", "bob", "--silence", "--record",
                                    str(record), "--no-prompt", "--duration", "2.5",
                                    server=url, user="alice")  # fmt: skip
            assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
            await bob.wait_for("Waiting for the next call")
            pcm = load_wav(record, SAMPLE_RATE).astype(np.float64)
            heard.append(float(np.sqrt(np.mean(pcm**2))))
        bob.interrupt()
        assert await bob.finish() == ExitCode.OK, bob.stdout + bob.stderr
    assert min(heard) > 300.0, heard  # speech both times (silence and comfort noise: < 60)
