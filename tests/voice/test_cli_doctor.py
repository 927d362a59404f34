"""`voice doctor`: the real CLI against a real signaling server, coturn and PulseAudio.

All green with a wss:// server, a coturn on UDP, TCP and TLS and a tone on the null sink; a ✘
and its fix, and a fatal exit code, for an unreachable server, a key file others can read, TURN
URIs nobody answers and a microphone that does not exist. Then the pure verdicts and the table.
"""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path

import pytest

from signaling.server import serve_signaling
from tests.signaling.helpers import server_config
from tests.support.coturn import running_coturn
from tests.support.tls import TestCA
from tests.voice.cli_harness import VoiceProc, run_voice
from voice.cli.doctor_checks import (
    ENVELOPE_MAX_AGE,
    Check,
    IceAttempt,
    Skew,
    judge_clock,
    judge_ice,
    judge_input_level,
    judge_opus,
    render_table,
    rms_dbfs,
    skew_from_date,
    verdict,
)
from voice.crypto.identity import Identity
from voice.crypto.replay import ReplayGuard
from voice.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]
HEADLESS = ("--silence", "--no-output")  # the audio rows are skipped, not fatal
MARKS = ("✔", "✘", "–")


def rows(out: str) -> dict[str, tuple[str, str]]:
    """The table as {check name: (mark, its text and fix, joined)}."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("CHECK"))
    cut = lines[header].index("RESULT")
    table: dict[str, tuple[str, str]] = {}
    name = ""
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        if line[0] in MARKS:
            name = line[3:cut].strip()
            table[name] = (line[0], line[cut:].strip())
        else:
            mark, text = table[name]
            table[name] = (mark, f"{text} {line.strip()}")
    return table


def closed_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pulse() -> None:
    """PulseAudio with the null sink vsink (scripts/pulse.sh starts it if none runs)."""
    subprocess.run(["bash", str(REPO / "scripts" / "pulse.sh")], check=True)


@asynccontextmanager
async def tone_on_vsink(folder: Path, seconds: float = 15.0) -> AsyncIterator[None]:
    """A 440 Hz tone played into the null sink: what the microphone (its monitor) hears."""
    path = folder / "tone.wav"
    rate = 48_000
    one = bytearray()
    for i in range(rate // 10):  # 0.1 s, repeated
        one += int(8000 * math.sin(2 * math.pi * 440 * i / rate)).to_bytes(2, "little", signed=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(one) * int(seconds * 10))
    player = await asyncio.create_subprocess_exec("paplay", "--device=vsink", str(path))
    try:
        yield
    finally:
        player.terminate()
        await player.wait()


def assert_no_traceback(done: VoiceProc) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr


# -- the real CLI ---------------------------------------------------------------------------
async def test_all_green_with_wss_coturn_and_a_sound_card(tmp_path: Path, pulse: None) -> None:
    ca = TestCA.create(tmp_path / "pki")
    signal = ca.issue(tmp_path / "pki", "signal", dns=["localhost"], ips=["127.0.0.1"])
    relay = ca.issue(tmp_path / "pki", "relay", ips=["127.0.0.1"])
    with running_coturn(tmp_path, tcp=True, tls=relay) as coturn:
        config = server_config(
            tls_cert=signal.cert,
            tls_key=signal.key,
            turn_secret=coturn.secret.decode(),
            turn_uris=coturn.uris(),
        )
        async with serve_signaling(config) as server, tone_on_vsink(tmp_path):
            done = await run_voice(
                tmp_path / "alice", "--ca", str(ca.cert_path), "doctor",
                server=server.url, user="alice", env={"PULSE_SOURCE": "vsink.monitor"},
            )  # fmt: skip
    assert done.proc.returncode == ExitCode.OK, done.stdout + done.stderr
    table = rows(done.stdout)
    expected = {"config folder", "key files", "libopus", "microphone", "speaker", "server",
                "clock", "login", "STUN", "TURN udp", "TURN tcp", "TURN tls", "UDP",
                "media path"}  # fmt: skip
    assert set(table) == expected, done.stdout
    assert all(mark == "✔" for mark, _ in table.values()), done.stdout
    assert "TLSv1.3" in table["server"][1] and "verified" in table["server"][1]
    level = float(table["microphone"][1].split("RMS level ")[1].split(" dBFS")[0])
    assert -30 < level < -5, table["microphone"]  # the tone: amplitude 8000 is about -15 dBFS
    assert "logged in as alice (a new identity, just created)" in table["login"][1]
    assert "A call can work here." in done.stdout
    assert_no_traceback(done)
    assert coturn.secret.decode() not in done.stdout + done.stderr


async def test_an_unreachable_server_is_fatal_and_says_how_to_fix_it(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    done = await run_voice(tmp_path / "bob", "doctor", *HEADLESS, server=url, user="bob")
    assert done.proc.returncode == ExitCode.SERVER_UNREACHABLE, done.stdout + done.stderr
    table = rows(done.stdout)
    mark, text = table["server"]
    assert mark == "✘" and "connection refused" in text, text
    assert "fix (a call cannot work until this is fixed): check the address and port" in text
    assert table["login"][0] == "–" and table["clock"][0] == "–"
    assert table["microphone"] == ("–", "not checked: you send silence (--silence) instead of "
                                   "a microphone.")  # fmt: skip
    assert "A call cannot work here: server (exit code 3)." in done.stdout
    assert_no_traceback(done)


async def test_a_key_file_others_can_read_is_fatal_and_left_alone(tmp_path: Path) -> None:
    conf = tmp_path / "carol"
    key = conf / "identity.key"
    Identity.generate().save(key)
    key.chmod(0o644)
    async with serve_signaling(server_config()) as server:
        done = await run_voice(conf, "doctor", *HEADLESS, server=server.url, user="carol")
        registered = server.router.registry.exists("carol")
    assert done.proc.returncode == ExitCode.LOCAL_ERROR, done.stdout + done.stderr
    table = rows(done.stdout)
    mark, text = table["key files"]
    assert mark == "✘" and f"{key} has mode 0644" in text, text
    assert f"chmod 600 {key}" in text
    assert table["server"][0] == "✔" and "acceptable only on loopback" in table["server"][1]
    assert table["login"][0] == "–" and not registered  # the refused key was never used
    assert key.stat().st_mode & 0o777 == 0o644  # doctor reports, it does not change files
    assert_no_traceback(done)


async def test_turn_uris_nobody_answers_are_fatal(tmp_path: Path) -> None:
    udp, tcp = closed_port(socket.SOCK_DGRAM), closed_port()
    uris = (f"turn:127.0.0.1:{udp}?transport=udp", f"turn:127.0.0.1:{tcp}?transport=tcp",
            f"turns:127.0.0.1:{tcp}?transport=tcp")  # fmt: skip
    config = server_config(turn_secret="s3cret-for-nobody", turn_uris=uris)
    async with serve_signaling(config) as server:
        done = await run_voice(tmp_path / "dave", "doctor", *HEADLESS, server=server.url,
                               user="dave")  # fmt: skip
    assert done.proc.returncode == ExitCode.CALL_FAILED, done.stdout + done.stderr
    table = rows(done.stdout)
    assert table["login"][0] == "✔" and table["clock"][0] == "✔", done.stdout
    for transport in ("udp", "tcp", "tls"):
        mark, text = table[f"TURN {transport}"]
        assert mark == "✘" and "failed" in text and "fix: check that the relay runs" in text
    assert table["UDP"][0] == "✘" and "nor over anything else" in table["UDP"][1]
    mark, text = table["media path"]
    assert mark == "✘" and "no TURN relay could be allocated" in text
    assert "A call cannot work here: media path (exit code 1)." in done.stdout
    assert_no_traceback(done)


async def test_a_missing_microphone_is_fatal_unless_you_send_something_else(
    tmp_path: Path, pulse: None
) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"  # (the server row fails later in the table)
    done = await run_voice(tmp_path / "erin", "doctor", "--input", "no-such-card-xyz",
                           "--no-output", server=url, user="erin")  # fmt: skip
    assert done.proc.returncode == ExitCode.NO_AUDIO_DEVICE, done.stdout + done.stderr
    mark, text = rows(done.stdout)["microphone"]
    assert mark == "✘" and "no input audio device named 'no-such-card-xyz'" in text
    assert "--play WAV, --tone HZ or --silence" in text
    assert_no_traceback(done)


# -- the verdicts, without I/O ----------------------------------------------------------------
def test_the_table_marks_wraps_and_explains() -> None:
    checks = [
        Check.ok("server", "wss://x answers. " + "word " * 30),
        Check.fail("UDP", "blocked.", "allow outgoing UDP"),
        Check.fail("login", "refused.", "choose another --user", ExitCode.LOGIN_REFUSED),
        Check.skip("STUN/TURN", "needs a login"),
    ]
    text = render_table(checks, width=72)
    lines = text.splitlines()
    assert lines[0] == "   CHECK      RESULT"
    assert lines[1].startswith("✔  server     wss://x answers.")
    assert all(len(line) <= 72 for line in lines)
    assert lines[2].startswith(" " * 14 + "word")  # wrapped under the result column
    assert "✘  UDP        blocked." in lines
    assert " " * 14 + "fix: allow outgoing UDP" in lines
    fatal = rows(text)["login"]
    assert fatal == (
        "✘",
        "refused. fix (a call cannot work until this is fixed): choose another --user",
    )
    assert "–  STUN/TURN  not checked: needs a login" in text
    assert " ".join(lines[-2:]) == (
        "A call cannot work here: login (exit code 4). 1 other problem would not stop a call."
    )
    assert render_table([checks[0]]).splitlines()[-1] == "A call can work here."


def test_the_exit_code_is_the_first_fatal_failure_in_table_order() -> None:
    minor = Check.fail("UDP", "blocked.", "allow UDP")
    keys = Check.fail("key files", "0644.", "chmod 600", ExitCode.LOCAL_ERROR)
    server = Check.fail("server", "refused.", "start it", ExitCode.SERVER_UNREACHABLE)
    assert verdict([Check.ok("a", "fine."), minor]) is ExitCode.OK
    assert verdict([minor, keys, server]) is ExitCode.LOCAL_ERROR
    assert verdict([server, keys]) is ExitCode.SERVER_UNREACHABLE


def test_clock_skew_from_a_date_header_and_its_limits() -> None:
    server = 1_800_000_000.0
    date = formatdate(server, usegmt=True)  # whole seconds, as a server sends it
    skew = skew_from_date(date, server - 10.2, server - 9.8)  # we are ~10 s behind
    assert skew is not None
    assert skew.offset == pytest.approx(10.5) and skew.uncertainty == pytest.approx(0.7)
    assert skew_from_date("yesterday", 0, 1) is None
    assert ReplayGuard().max_age == ENVELOPE_MAX_AGE  # the limit the doctor explains
    assert judge_clock(Skew(0.4, 0.5)).status == "ok"
    behind = judge_clock(Skew(45.0, 0.5))
    assert behind.status == "fail" and behind.fatal is None and "behind" in behind.text
    ahead = judge_clock(Skew(-75.0, 0.5))
    assert ahead.fatal is ExitCode.CALL_FAILED and "ahead of" in ahead.text
    assert "timedatectl" in ahead.fix
    unknown = judge_clock(None)
    assert unknown.status == "skip" and "no usable Date header" in unknown.text


def test_udp_blocked_is_told_apart_from_a_dead_relay() -> None:
    udp = IceAttempt("turn", "turn:t:3478?transport=udp", "udp", error="no answer in 3 s")
    stun = IceAttempt("stun", "stun:t:3478", "udp", error="no answer in 3 s")
    tls = IceAttempt("turn", "turns:t:443", "tls", address="203.0.113.9")
    table = {c.name: c for c in judge_ice([stun, udp, tls], turn_offered=True)}
    assert table["UDP"].status == "fail" and "blocked" in table["UDP"].text
    assert table["UDP"].fatal is None
    assert table["media path"].status == "ok" and "(tls)" in table["media path"].text
    assert table["TURN udp"].status == "fail" and table["TURN tls"].status == "ok"
    dead = {c.name: c for c in judge_ice([stun, udp], turn_offered=True)}
    assert dead["media path"].fatal is ExitCode.CALL_FAILED
    none = {c.name: c for c in judge_ice([], turn_offered=False)}
    assert none["TURN"].status == "fail" and none["TURN"].fatal is None
    assert none["UDP"].status == "skip" and none["media path"].fatal is None


def test_levels_and_libopus() -> None:
    assert rms_dbfs(bytes(1920)) == -math.inf
    full = (32767).to_bytes(2, "little", signed=True) * 960
    assert rms_dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert judge_input_level("mic", -math.inf, 1.0).status == "fail"
    assert judge_input_level("mic", -42.0, 1.0).status == "ok"
    assert judge_opus("libopus 1.6.1", 6).status == "ok"
    old = judge_opus("libopus 1.3.1", 0)
    assert old.status == "fail" and old.fatal is None and "build-libopus.sh" in old.fix
