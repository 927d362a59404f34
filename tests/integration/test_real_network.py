"""Real calls over a real (namespaced) network: two homes behind NATs, the signaling server
over TLS and coturn on UDP/TCP/TLS on "public" addresses (``tests/support/netlab.py``).

The `voice` CLI runs as it would for a user: ``listen`` / ``call`` with ``--server wss://...``
and ``--ca``, and NO networking flags; the contacts are verified beforehand (as after a
compared SAS), so the default relay policy may use direct paths. Select with ``-m netlab``;
the tests skip (with the reason in the summary) where namespaces cannot be made (not root, no
``ip netns``, no iptables or coturn).

    .venv/bin/pytest -m netlab tests/integration/test_real_network.py
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.impair.schedule import Profile
from tests.support.netlab import VARIANTS, LabUser, NetLab, Variant, unavailable
from tests.voice.cli_harness import VoiceProc
from voice.audio.base import SAMPLE_RATE
from voice.audio.quality import compare
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav, write_wav
from voice.exitcodes import ExitCode

pytestmark = [pytest.mark.netlab, pytest.mark.slow, pytest.mark.timeout(300)]

# Speech is played PLAYS times in a row; the best play must reach PESQ_WB_MIN and every
# complete play PESQ_WB_FLOOR. A clean play of the 4.5 s clip scores 4.2-4.35. A jitter-
# buffer step mid-word (an underrun: one concealed frame, the rest 20 ms later) costs 0.3-1.7
# on that play: on this 2-core machine, idle, one call in four has one, on every path (a single
# play once failed CI at 3.31), and a call that time-stretched a few times scored 3.74 and
# 3.76 on both its plays (CI, nat). Unrelated audio scores about 1.0, a broken path below 2.
# The quality figure of issue 10 (PESQ-WB >= 4.0 on every path) is bench/real_network.py's:
# this test asserts that speech gets through on the expected path, well.
PLAYS = 3
PESQ_WB_MIN = 3.5
PESQ_WB_FLOOR = 2.0
HEADLESS = ("--no-prompt",)
PATH_WORDS = re.compile(r"\b(host|srflx|prflx|relay)\b")
IDLE_AGAIN = "Waiting for the next call"  # what ``listen`` prints when a call has ended
MANY = 100  # packets: a 16 s call sends about 800 RTP packets each way


@functools.cache
def _why_not() -> str | None:
    return unavailable()


MakeLab = Callable[..., NetLab]


@pytest.fixture
async def make_lab(tmp_path: Path) -> AsyncIterator[MakeLab]:
    why = _why_not()
    if why is not None:
        pytest.skip(f"netlab: {why}")
    labs: list[NetLab] = []

    def make(variant: Variant, **kw: Any) -> NetLab:
        lab = NetLab(variant, tmp_path / f"lab{len(labs)}", **kw)
        labs.append(lab)
        lab.start()
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            await lab.stop_voices()
            lab.close()


# ---- helpers -----------------------------------------------------------------------------------


def details(lab: NetLab, *procs: VoiceProc) -> str:
    out = [f"counters: {lab.counters()}"]
    for vp in procs:
        out.append(f"--- exit {vp.proc.returncode}\n{vp.stdout}{vp.stderr}")
    out.append(lab.logs())
    return "\n".join(out)


async def end(vp: VoiceProc, limit: float = 15.0) -> int:
    """The exit code. A ``listen`` gets Ctrl-C once it is back to waiting (its call ended),
    or after ``limit`` s: it would wait for the next call for ever."""
    with contextlib.suppress(TimeoutError, AssertionError):  # AssertionError: it exited
        await vp.wait_for(IDLE_AGAIN, limit)
    if vp.proc.returncode is None:
        vp.interrupt()
    return await vp.finish(15)


async def wait_any(vp: VoiceProc, words: tuple[str, ...], limit: float) -> str | None:
    """The first stdout line containing any of ``words`` (case-insensitive)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for line in vp.lines:
            if any(w in line.lower() for w in words):
                return line
        await asyncio.sleep(0.05)
    return None


def media_path(vp: VoiceProc) -> set[str]:
    """The candidate kinds named on the client's ``Media path: ...`` line."""
    for line in vp.lines:
        if line.startswith("Media path: "):
            return set(PATH_WORDS.findall(line))
    raise AssertionError(f"no 'Media path: ' line:\n{vp.stdout}{vp.stderr}")


def pesq_per_play(heard: Path) -> list[float]:
    """PESQ-WB of each complete play of the speech clip in ``heard``, in order.

    The plays are found together (one alignment), then each is scored on its own, with room
    for the jitter buffer having moved it by a few frames.
    """
    once = load_wav(speech_sample())
    got = load_wav(heard, SAMPLE_RATE)
    whole = compare(np.concatenate([once] * PLAYS), got, max_lag_s=8.0)
    assert whole.delay_ms is not None, whole
    first = round(whole.delay_ms * SAMPLE_RATE / 1000)
    room = SAMPLE_RATE // 10
    scores: list[float] = []
    for k in range(PLAYS):
        start = first + k * once.size
        if start < 0 or start + once.size > got.size:
            continue  # cut by the start or the end of the recording
        part = compare(once, got[max(0, start - room) : start + once.size + room], max_lag_s=0.2)
        scores.append(part.pesq_wb if part.pesq_wb is not None else 0.0)
    return scores


def tone_seconds(recording: Path, threshold: float = 300.0) -> float:
    """Seconds of the recording (in 100 ms windows) that carry sound (RMS above threshold)."""
    pcm = load_wav(recording, SAMPLE_RATE).astype(np.float64)
    win = SAMPLE_RATE // 10
    n = len(pcm) // win
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(pcm[: n * win].reshape(n, win) ** 2, axis=1))
    return float(np.count_nonzero(rms > threshold)) / 10


def longest_gap(recording: Path, threshold: float = 300.0) -> float:
    """The longest silence (in 100 ms windows) between the first and the last sound of the
    recording, in seconds. The receiver writes a frame every 20 ms, sound or not, so this is
    how long the audio was gone."""
    pcm = load_wav(recording, SAMPLE_RATE).astype(np.float64)
    win = SAMPLE_RATE // 10
    n = len(pcm) // win
    rms = np.sqrt(np.mean(pcm[: n * win].reshape(n, win) ** 2, axis=1))
    loud = np.flatnonzero(rms > threshold)
    if loud.size < 2:
        return float("inf")
    return float(np.max(np.diff(loud)) - 1) / 10


def two_users(lab: NetLab) -> tuple[LabUser, LabUser]:
    alice, bob = lab.user("alice", "a"), lab.user("bob", "b")
    lab.verify(alice, bob)
    return alice, bob


async def listening(lab: NetLab, who: LabUser, *argv: str) -> VoiceProc:
    vp = await lab.voice(who, "listen", "--auto-answer", *argv, *HEADLESS)
    await vp.wait_for("Waiting for a call", 30)
    return vp


# ---- audio and the media path in each variant --------------------------------------------------

EXPECTED = {
    "direct": "host (no NAT): home to home, never through coturn",
    "nat": "srflx (or host/prflx through the NATs): home to home, never through coturn",
    "symmetric": "relay: per-destination NAT ports defeat STUN",
    "udp_blocked": "relay over TURN/TCP or TURN/TLS for the home without UDP",
}


async def speech_call(lab: NetLab) -> tuple[VoiceProc, VoiceProc, Path, Path, str]:
    """alice calls bob for 16 s, each playing the speech clip PLAYS times and recording what
    they hear; both must end with exit code OK. (caller, listener, bob's and alice's
    recordings, the details to show if an assertion fails)."""
    alice, bob = two_users(lab)
    speech = str(lab.workdir / "speech.wav")
    write_wav(speech, np.concatenate([load_wav(speech_sample())] * PLAYS))
    heard_by_bob, heard_by_alice = lab.workdir / "bob.wav", lab.workdir / "alice.wav"
    listener = await listening(lab, bob, "--play", speech, "--record", str(heard_by_bob))
    caller = await lab.voice(alice, "call", "bob", "--play", speech, "--record",
                             str(heard_by_alice), "--duration", "16", *HEADLESS)  # fmt: skip
    code = await caller.finish(90)
    bob_code = await end(listener)
    why = details(lab, caller, listener)
    assert code == ExitCode.OK and bob_code == ExitCode.OK, why
    return caller, listener, heard_by_bob, heard_by_alice, why


@pytest.mark.parametrize("variant", VARIANTS)
async def test_speech_both_ways_on_the_expected_path(make_lab: MakeLab, variant: Variant) -> None:
    lab = make_lab(variant)
    caller, listener, heard_by_bob, heard_by_alice, why = await speech_call(lab)
    counters = lab.counters()
    assert counters["signaling_udp"] == 0, why  # the server never saw a media packet
    for vp in (caller, listener):
        kinds = media_path(vp)
        if variant == "direct":
            assert "host" in kinds and not kinds & {"relay", "srflx"}, (
                f"expected {EXPECTED[variant]}\n{why}"
            )
        elif variant == "nat":
            assert "relay" not in kinds and kinds & {"srflx", "prflx"}, (
                f"expected {EXPECTED[variant]}\n{why}"
            )
        else:
            assert "relay" in kinds, f"expected {EXPECTED[variant]}\n{why}"
    if variant in ("direct", "nat"):
        assert counters["peer_udp"] > MANY and counters["relay_udp"] < MANY, why
    else:
        # Through coturn: media reaches its listening ports (UDP, or TCP/TLS for the home without
        # UDP), not home to home. relay_udp (to the relay ports) is not asserted: when both
        # phones pick relay candidates of the same coturn, its packets between the two
        # allocations never reach a relay port from outside (seen: relay_udp 9, turn_udp 1692).
        turned = counters["turn_udp"] + counters["turn_tcp"] + counters["turn_tls"]
        assert turned > MANY and counters["peer_udp"] < MANY, why
    if variant == "udp_blocked":
        assert counters["turn_tcp"] + counters["turn_tls"] > MANY, why
    for heard in (heard_by_bob, heard_by_alice):
        scores = pesq_per_play(heard)
        shown = ", ".join(f"{score:.2f}" for score in scores)
        assert len(scores) >= PLAYS - 1, f"{heard.name}: plays heard: {shown}\n{why}"
        assert max(scores) >= PESQ_WB_MIN, f"{heard.name}: PESQ-WB of each play {shown}\n{why}"
        assert min(scores) >= PESQ_WB_FLOOR, f"{heard.name}: PESQ-WB of each play {shown}\n{why}"


LOSSY_PESQ_WB = 2.5  # mean over the plays at 10 % random loss each way (see the test)


async def test_speech_at_ten_percent_loss_through_the_impairment_stage(make_lab: MakeLab) -> None:
    """Both homes' access links drop 10 % of what they deliver (seeded, random), in the
    userspace impairment stage between the NATs and the Internet: FEC and concealment keep
    the speech intelligible. The mean PESQ-WB over the plays must reach LOSSY_PESQ_WB
    (measured: means 3.1-3.7 per side, single plays 2.5-4.0; a clean play scores 4.2-4.35)."""
    lab = make_lab("nat")
    lab.impair({"down_a": Profile(loss=0.10), "down_b": Profile(loss=0.10)}, seed=10)
    caller, listener, heard_by_bob, heard_by_alice, why = await speech_call(lab)
    assert lab.stage is not None
    for direction, counters in lab.stage.stats().items():
        if direction.startswith("down_"):  # the loss was real: 10 % of what reached each home
            assert 0.06 * counters.arrived < counters.lost < 0.14 * counters.arrived, why
    for vp in (caller, listener):  # and each side says so when the call ends
        summary = next((line for line in vp.lines if line.startswith("Audio received")), "")
        assert "packets lost: 0," not in summary and "rebuilt from FEC" in summary, why
    for heard in (heard_by_bob, heard_by_alice):
        scores = pesq_per_play(heard)
        shown = ", ".join(f"{score:.2f}" for score in scores)
        assert len(scores) >= PLAYS - 1, f"{heard.name}: plays heard: {shown}\n{why}"
        mean = sum(scores) / len(scores)
        assert mean >= LOSSY_PESQ_WB, f"{heard.name}: PESQ-WB of each play {shown}\n{why}"


async def test_blocked_media_never_says_connected_and_names_the_paths_tried(
    make_lab: MakeLab,
) -> None:
    """No UDP between the homes and no TURN: the call fails, and "Connected" (which means an
    authenticated SRTP packet arrived) is never printed."""
    lab = make_lab("direct", turn=False)
    lab.drop_udp_between_homes()
    alice, bob = two_users(lab)
    listener = await listening(lab, bob, "--silence", "--no-output")
    caller = await lab.voice(alice, "call", "bob", "--tone", "440", "--no-output",
                             "--duration", "5", *HEADLESS)  # fmt: skip
    code = await caller.finish(120)
    await end(listener, 30)
    why = details(lab, caller, listener)
    assert code not in (ExitCode.OK, None), why
    assert not any("connected" in line.lower() for line in caller.lines + listener.lines), why
    assert "Traceback" not in caller.stderr, why
    said = (caller.stdout + caller.stderr).lower()
    assert "host" in said, f"the failure should name the paths it tried\n{why}"
    assert lab.counters()["signaling_udp"] == 0, why


# ---- situations: outage, address change, server restart, a killed peer, a dark home -------------


async def _call_through(
    lab: NetLab, event: Callable[[], Any], *, seconds: int = 45, max_gap: float | None = None
) -> None:
    """A tone call between the homes; ``event`` runs 5 s after "Connected"; the call must
    survive it: both exit 0 and audio flows again afterwards, both ways (within ``max_gap``
    seconds of silence, if given)."""
    alice, bob = two_users(lab)
    rec_bob, rec_alice = lab.workdir / "bob.wav", lab.workdir / "alice.wav"
    listener = await listening(lab, bob, "--tone", "660", "--record", str(rec_bob))
    caller = await lab.voice(alice, "call", "bob", "--tone", "440", "--record", str(rec_alice),
                             "--duration", str(seconds), *HEADLESS)  # fmt: skip
    await caller.wait_for("Connected", 30)
    t_connected = time.monotonic()
    await asyncio.sleep(5)
    before = time.monotonic() - t_connected
    result = event()
    if asyncio.iscoroutine(result):
        await result
    code = await caller.finish(seconds + 60)
    bob_code = await end(listener)
    why = details(lab, caller, listener)
    assert code == ExitCode.OK and bob_code == ExitCode.OK, why
    for rec in (rec_bob, rec_alice):
        if max_gap is not None:
            gap = longest_gap(rec)
            assert gap <= max_gap, f"{rec.name}: the audio was gone for {gap:.1f} s\n{why}"
        heard = tone_seconds(rec)
        assert heard >= before + 5, (
            f"{rec.name}: {heard:.1f} s of audio, {before:.1f} before\n{why}"
        )
    assert lab.counters()["signaling_udp"] == 0, why


async def test_a_20_s_outage_mid_call_is_survived(make_lab: MakeLab) -> None:
    lab = make_lab("nat")
    # 5 s of audio, the 20 s outage, then 9 s for ICE to come back and 5 s of audio to be heard
    await _call_through(lab, lambda: lab.outage("b", 20), seconds=34)


RESUME_WITHIN = 5.0  # s of silence an address change may cost; measured 1.1-1.2 s: the
# address poll (1 s), a new login and the ICE restart. When the restart offer waited for
# keepalive to find the old signaling session dead, it was 15-25 s.


async def test_an_address_change_mid_call_costs_a_short_gap(make_lab: MakeLab) -> None:
    # 20 s: the change 5 s in, at most RESUME_WITHIN s gone, then 5 s of audio are asked, with
    # 5 s to spare
    lab = make_lab("nat")
    await _call_through(lab, lambda: lab.change_address("b"), seconds=20, max_gap=RESUME_WITHIN)


async def test_idle_phones_are_callable_again_within_20_s_of_a_server_restart(
    make_lab: MakeLab,
) -> None:
    lab = make_lab("nat")
    alice, bob = two_users(lab)
    carol = lab.user("carol", "a")
    lab.verify(alice, bob, carol)
    phones = {
        "alice": await listening(lab, alice, "--silence", "--no-output"),
        "bob": await listening(lab, bob, "--silence", "--no-output"),
    }
    lab.restart_server(down_for=2)
    back = time.monotonic()
    reached: dict[str, float] = {}
    attempts: list[VoiceProc] = []
    for name, phone in phones.items():
        while name not in reached and time.monotonic() - back < 20:
            try_call = await lab.voice(carol, "call", name, "--silence", "--no-output",
                                       "--duration", "1", *HEADLESS)  # fmt: skip
            attempts.append(try_call)
            rang = await wait_any(phone, ("incoming call from carol",), 8)
            if rang is not None:
                reached[name] = time.monotonic() - back
            await end(try_call, 20)
            if name not in reached:
                await asyncio.sleep(1)
    why = details(lab, *phones.values(), *attempts[-2:])
    assert set(reached) == {"alice", "bob"}, f"reached: {reached}\n{why}"
    assert max(reached.values()) <= 20, f"reached: {reached}\n{why}"


async def test_a_peer_killed_with_sigkill_is_reported_within_10_s(make_lab: MakeLab) -> None:
    lab = make_lab("nat")
    alice, bob = two_users(lab)
    listener = await listening(lab, bob, "--tone", "660", "--no-output")
    caller = await lab.voice(alice, "call", "bob", "--tone", "440", "--no-output",
                             "--duration", "60", *HEADLESS)  # fmt: skip
    await caller.wait_for("Connected", 30)
    await asyncio.sleep(2)
    listener.proc.kill()  # SIGKILL: no hangup, no goodbye (ip netns exec exec()s the client)
    said = await wait_any(caller, ("reconnecting", "no audio from"), 10)
    caller.interrupt()
    await end(caller)
    why = details(lab, caller, listener)
    assert said is not None, f"nothing said within 10 s of the peer's death\n{why}"


async def test_calling_a_home_that_went_dark_fails_clearly(make_lab: MakeLab) -> None:
    lab = make_lab("nat")
    alice, bob = two_users(lab)
    listener = await listening(lab, bob, "--silence", "--no-output")
    lab.go_dark("b")
    await asyncio.sleep(1)
    # --timeout 8: the phone that never says "ringing" is given up after min(ring timeout 25 s,
    # the no-answer timeout), as unreachable, not "no answer" (8 s keeps the suite short)
    caller = await lab.voice(alice, "call", "bob", "--silence", "--no-output",
                             "--duration", "3", "--timeout", "8", *HEADLESS)  # fmt: skip
    code = await caller.finish(150)
    why = details(lab, caller, listener)
    said = (caller.stdout + caller.stderr).lower()
    assert code not in (ExitCode.OK, ExitCode.NO_ANSWER), why
    assert any(w in said for w in ("offline", "unreachable", "did not ring")), why
    assert "no answer" not in said, why
    assert "Traceback" not in caller.stderr, why
