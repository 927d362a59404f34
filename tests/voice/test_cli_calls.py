"""`voice listen` / `voice call` as real processes against a real `python -m signaling`.

Every failure the issue names gets its own exit code, checked end to end: server unreachable,
login refused, user offline, unknown user, declined, busy, no answer, key changed, no audio
device. A successful call shows the same SAS on both sides and can mark the contact verified.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from tests.voice.cli_harness import VoiceProc, run_voice, signaling_server, start_voice
from voice.audio.base import SAMPLE_RATE
from voice.audio.quality import compare, segmental_correlation
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav
from voice.crypto.contacts import ContactBook, TrustState
from voice.crypto.identity import Identity
from voice.exitcodes import ExitCode

pytestmark = pytest.mark.timeout(120)

HEADLESS = ("--silence", "--no-output", "--no-prompt")


def sas_of(vp: VoiceProc) -> str:
    for i, line in enumerate(vp.lines):
        if line.startswith("Security code (SAS):"):
            return line.split(":", 1)[1].strip() + " | " + vp.lines[i + 1].strip()
    raise AssertionError(f"no SAS shown:\n{vp.stdout}{vp.stderr}")


async def listener(conf: Path, url: str, user: str, *argv: str, **kw: object) -> VoiceProc:
    vp = await start_voice(conf, "listen", *argv, server=url, user=user, **kw)  # type: ignore[arg-type]
    await vp.wait_for("Waiting for a call")
    return vp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_server_unreachable(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    vp = await run_voice(tmp_path / "a", "call", "bob", *HEADLESS, server=url, user="alice")
    assert vp.proc.returncode == ExitCode.SERVER_UNREACHABLE, vp.stderr
    assert "cannot reach" in vp.stderr and "Traceback" not in vp.stderr


async def test_call_shows_equal_sas_carries_audio_and_marks_verified(tmp_path: Path) -> None:
    heard = tmp_path / "bob-heard.wav"
    async with signaling_server() as url:
        bob = await listener(tmp_path / "bob", url, "bob", "--auto-answer", "--silence",
                             "--record", str(heard), "--no-prompt")  # fmt: skip
        alice = await run_voice(
            tmp_path / "alice", "call", "bob", "--play", str(speech_sample()), "--no-output",
            "--duration", "3", server=url, user="alice", stdin=b"y\n",
        )  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        assert await bob.stop_listening() == ExitCode.OK, bob.stdout + bob.stderr
    assert sas_of(alice) == sas_of(bob)
    assert "Incoming call from alice" in bob.stdout
    assert "Call ended: you hung up" in alice.stdout and "alice hung up" in bob.stdout
    alice_book = ContactBook(tmp_path / "alice" / "contacts.json", server=url)
    bob_book = ContactBook(tmp_path / "bob" / "contacts.json", server=url)
    seen = alice_book.get("bob")
    assert seen is not None and seen.state is TrustState.VERIFIED  # "y" after the SAS
    out = alice.stdout
    assert out.index("Security code (SAS)") < out.index("bob marked verified")
    assert seen.public_key == Identity.load_or_create(tmp_path / "bob" / "identity.key").public_key
    seen = bob_book.get("alice")
    assert seen is not None and seen.state is TrustState.UNVERIFIED  # pinned, not compared
    assert (tmp_path / "alice" / "user").read_text().strip() == "alice"  # remembered
    speech = load_wav(speech_sample(), SAMPLE_RATE)
    got = load_wav(heard, SAMPLE_RATE)
    report = compare(speech, got, max_lag_s=1.0)
    assert report.delay_ms is not None, report
    # The speech got through, window by window (silence or noise: ~0). One overall correlation
    # halves at a 20 ms step of the jitter buffer though every word got through (0.33 once in
    # CI, with PESQ-WB 2.5): the demo measures the same way (voice.demo._heard_speech).
    lag = round(report.delay_ms * SAMPLE_RATE / 1000)
    assert segmental_correlation(speech, got, lag) > 0.5, report


async def test_sas_prompt_marks_the_contact_verified(tmp_path: Path) -> None:
    async with signaling_server() as url:
        bob = await listener(tmp_path / "bob", url, "bob", "--silence", "--no-output",
                             stdin=b"y\ny\n")  # fmt: skip
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration", "1",
                                server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        assert await bob.stop_listening() == ExitCode.OK, bob.stdout + bob.stderr
    assert "Ringing bob" in alice.stdout
    assert "Accept the call from alice? [y/N]" in bob.stdout
    assert "Does alice read the same words? [y/N]" in bob.stdout
    contact = ContactBook(tmp_path / "bob" / "contacts.json", server=url).get("alice")
    assert contact is not None and contact.state is TrustState.VERIFIED


async def test_a_verified_contact_is_not_asked_to_compare_again(tmp_path: Path) -> None:
    """Both compare the words on the first call; on the second, each is told the contact is
    verified and the keys continue the first call's secret, and nobody is asked again."""
    quiet = ("--silence", "--no-output")
    async with signaling_server() as url:
        # bob: accept, "same words", accept the second call (and nothing more to answer)
        bob = await listener(tmp_path / "bob", url, "bob", *quiet, stdin=b"y\ny\ny\n")
        first = await run_voice(tmp_path / "alice", "call", "bob", *quiet, "--duration", "2",
                                server=url, user="alice", stdin=b"y\n")  # fmt: skip
        assert first.proc.returncode == ExitCode.OK, first.stdout + first.stderr
        await bob.wait_for("Waiting for the next call", 20)
        second = await run_voice(tmp_path / "alice", "call", "bob", *quiet, "--duration", "1",
                                 server=url, user="alice", stdin=b"")  # fmt: skip
        assert second.proc.returncode == ExitCode.OK, second.stdout + second.stderr
        assert await bob.stop_listening() == ExitCode.OK, bob.stdout + bob.stderr
    assert "Does bob read the same words?" in first.stdout
    assert "Does bob read the same words?" not in second.stdout
    assert bob.stdout.count("Does alice read the same words?") == 1
    told = "is verified: the same identity key as in your 1 earlier call, and this call's keys"
    assert f"bob {told}" in second.stdout and f"alice {told}" in bob.stdout
    assert "WARNING" not in second.stdout + bob.stdout


async def test_offline_unknown_and_no_call(tmp_path: Path) -> None:
    async with signaling_server() as url:
        # bob registers, waits 1 s for a call that never comes, and leaves
        bob = await run_voice(tmp_path / "bob", "listen", *HEADLESS, "--timeout", "1",
                              server=url, user="bob")  # fmt: skip
        assert bob.proc.returncode == ExitCode.NO_ANSWER, bob.stdout + bob.stderr
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS,
                                server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.USER_OFFLINE, alice.stdout + alice.stderr
        assert "bob" in alice.stderr and "Traceback" not in alice.stderr
        alice = await run_voice(tmp_path / "alice", "call", "carol", *HEADLESS,
                                server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.UNKNOWN_USER, alice.stdout + alice.stderr


async def test_declined(tmp_path: Path) -> None:
    async with signaling_server() as url:
        bob = await listener(tmp_path / "bob", url, "bob", *HEADLESS[:2], stdin=b"n\n")
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS,
                                server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.DECLINED, alice.stdout + alice.stderr
        assert "bob declined" in alice.stdout
        assert await bob.stop_listening() == ExitCode.OK, bob.stdout + bob.stderr


async def test_no_answer_and_busy(tmp_path: Path) -> None:
    async with signaling_server() as url:
        # bob's phone rings but nobody types anything: alice gives up after 1.5 s
        bob = await listener(tmp_path / "bob", url, "bob", *HEADLESS[:2])  # stdin stays open
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--timeout", "1.5",
                                server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.NO_ANSWER, alice.stdout + alice.stderr
        await bob.wait_for("Missed call from alice (cancelled)")  # and bob's listen goes on
        bob.interrupt()
        assert await bob.finish() == ExitCode.OK
        # bob is in a call with alice; carol gets busy
        bob = await listener(tmp_path / "bob", url, "bob", "--auto-answer", *HEADLESS)
        alice = await start_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration",
                                  "20", server=url, user="alice")  # fmt: skip
        await alice.wait_for("Connected")
        carol = await run_voice(tmp_path / "carol", "call", "bob", *HEADLESS,
                                server=url, user="carol")  # fmt: skip
        assert carol.proc.returncode == ExitCode.BUSY, carol.stdout + carol.stderr
        alice.interrupt()  # Ctrl-C hangs up cleanly
        assert await alice.finish() == ExitCode.OK, alice.stdout + alice.stderr
        assert "you hung up" in alice.stdout
        assert await bob.stop_listening() == ExitCode.OK
        assert "Missed call from carol (you were in another call" in bob.stdout


async def test_key_changed_then_trust(tmp_path: Path) -> None:
    async with signaling_server() as url:
        bob = await listener(tmp_path / "bob", url, "bob", "--auto-answer", *HEADLESS)
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration",
                                "0.5", server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        await bob.stop_listening()
        # the server binds "bob" to bob's first key: a new key cannot log in as bob there
        refused = await run_voice(tmp_path / "bob2", "listen", *HEADLESS, "--timeout", "1",
                                  server=url, user="bob")  # fmt: skip
        assert refused.proc.returncode == ExitCode.LOGIN_REFUSED, refused.stderr
    # the server at that address restarts with a fresh registry (or lies): a new key takes the
    # name there, and alice's pin for bob on that server catches it
    new_key = Identity.load_or_create(tmp_path / "bob2" / "identity.key")
    old_key = Identity.load_or_create(tmp_path / "bob" / "identity.key")
    async with signaling_server(port=int(url.rsplit(":", 1)[1])) as url:
        bob = await listener(tmp_path / "bob2", url, "bob", "--auto-answer", *HEADLESS)
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS,
                                server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.KEY_CHANGED, alice.stdout + alice.stderr
        assert old_key.fingerprint.human in alice.stderr
        assert new_key.fingerprint.human in alice.stderr
        command = re.search(r"voice trust bob (ed25519:[0-9a-f]{64})", alice.stderr)
        assert command is not None and command.group(1) == new_key.fingerprint.machine
        assert "Incoming call" not in "".join(bob.lines)  # bob's phone never rang
        trusted = await run_voice(tmp_path / "alice", "trust", "bob", command.group(1))
        assert trusted.proc.returncode == ExitCode.OK
        alice = await run_voice(tmp_path / "alice", "call", "bob", *HEADLESS, "--duration",
                                "0.5", server=url, user="alice")  # fmt: skip
        assert alice.proc.returncode == ExitCode.OK, alice.stdout + alice.stderr
        await bob.stop_listening()


async def test_bogus_audio_device(tmp_path: Path) -> None:
    async with signaling_server() as url:
        vp = await run_voice(tmp_path / "a", "call", "bob", "--input", "no-such-mic",
                             "--no-output", server=url, user="alice")  # fmt: skip
        assert vp.proc.returncode == ExitCode.NO_AUDIO_DEVICE, vp.stderr
        assert "no-such-mic" in vp.stderr and "Traceback" not in vp.stderr
        vp = await run_voice(tmp_path / "b", "listen", "--silence", "--output", "4242",
                             server=url, user="bob")  # fmt: skip
        assert vp.proc.returncode == ExitCode.NO_AUDIO_DEVICE, vp.stderr
        assert "4242" in vp.stderr


async def test_demo_exits_0_with_two_equal_sases(tmp_path: Path) -> None:
    vp = await run_voice(tmp_path, "demo", limit=60)
    assert vp.proc.returncode == ExitCode.OK, vp.stdout + vp.stderr
    shown = [line.split("sees", 1)[1].strip() for line in vp.lines if " sees " in line]
    assert len(shown) == 2 and shown[0] == shown[1], vp.stdout
    assert "equal: yes" in vp.stdout and "PESQ-WB" in vp.stdout
    await asyncio.sleep(0)
