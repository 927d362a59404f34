"""``voice demo --group N``: a real end-to-end encrypted group call of N temporary local users.

It starts an embedded signaling server and a private Janus (VideoRoom, ``require_e2ee``) on
this machine, makes N users (fresh identities and contact books in a temporary directory), and
has the first create the group and invite the others one by one (they accept at once). Then
everyone plays the shipped speech sample at the same time, and every member records what it
hears from each other member separately. The demo prints each member's group security code
(they must all be equal) and a PESQ-WB table for every ordered pair (speaker -> listener).
Exit code 0 only if the codes are equal and every pair scored at least :data:`MIN_PESQ`.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from signaling.config import Config
from signaling.server import serve_signaling
from voice.audio.base import SAMPLE_RATE
from voice.audio.quality import compare
from voice.audio.sinks import WavRecorder
from voice.audio.sources import WavFileSource
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.sas import Sas
from voice.exitcodes import ExitCode
from voice.group.janusd import run_janus
from voice.group.session import GroupCall
from voice.net.client import SignalingClient

__all__ = ["MAX_MEMBERS", "MIN_MEMBERS", "MIN_PESQ", "run_group_demo"]

NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
MIN_MEMBERS, MAX_MEMBERS = 3, len(NAMES)
MIN_PESQ = 3.5  # measured: 3.9-4.1 for every pair on a 2-core machine (N = 4 and N = 8)
STEP_S = 30.0  # at most per join, and for the media to flow
MARGIN_S = 1.0  # recorded after the speech ends (the path's delay)


class ArmedRecorder(WavRecorder):
    """A WAV of one speaker as one listener hears it, from the moment it is armed: the
    recordings then start together with the speech, so PESQ aligns them easily."""

    armed = False

    async def write_frame(self, pcm: bytes) -> None:
        if self.armed:
            await super().write_frame(pcm)


class Member:
    """One temporary user: identity, contacts, signaling session, group call, recordings."""

    def __init__(self, name: str, root: Path, records: Path) -> None:
        self.name = name
        self.identity = Identity.load_or_create(root / name / "identity.key")
        self.contacts = ContactBook(root / name / "contacts.json")
        self.records = records
        self.recorders: dict[str, ArmedRecorder] = {}
        self.client: SignalingClient | None = None
        self.call: GroupCall | None = None

    def sink_for(self, speaker: str) -> ArmedRecorder:
        path = self.records / f"{speaker}-to-{self.name}.wav"
        return self.recorders.setdefault(speaker, ArmedRecorder(path))

    async def connect(self, url: str) -> SignalingClient:
        self.client = await SignalingClient.connect(
            url, self.name, self.identity.public_key, self.identity.sign
        )
        return self.client

    async def close(self) -> None:
        if self.call is not None:
            await self.call.close()
        if self.client is not None:
            await self.client.close()


def _code_text(code: Sas | None) -> str:
    if code is None:
        return "(none)"
    return f"{' '.join(code.words).upper():<28} {' '.join(code.emoji)}"


def _settled(epoch: int) -> Callable[[GroupCall], bool]:
    """Whether a call is at ``epoch`` and has its code."""
    return lambda call: call.epoch == epoch and call.code is not None


async def _assemble(members: list[Member], url: str, janus_url: str, out: TextIO) -> None:
    """The first member creates the group and invites the others, one epoch at a time."""
    creator, *others = members
    creator.call = await GroupCall.create(
        await creator.connect(url),
        creator.identity,
        creator.contacts,
        janus_url,
        sink_for=creator.sink_for,
    )
    print(f"{creator.name} creates the group (Janus room, require_e2ee).", file=out, flush=True)
    for member in others:
        member.call = GroupCall.listen(
            await member.connect(url),
            member.identity,
            member.contacts,
            auto_accept=True,
            sink_for=member.sink_for,
        )
        await member.call.control.peer_key(creator.name)  # a contact, pinned on first use
        epoch = creator.call.epoch + 1
        await creator.call.invite(member.name)
        async with asyncio.timeout(STEP_S):
            await creator.call.until(lambda c, e=epoch: c.epoch >= e)  # type: ignore[misc]
            for m in members[: members.index(member) + 1]:
                assert m.call is not None
                await m.call.until(_settled(epoch))
        print(f"  {member.name} joins: epoch {epoch}, new keys, new code", file=out, flush=True)


async def _talk(members: list[Member], out: TextIO) -> float:
    """Everyone hears everyone, then plays the speech at once; its length in seconds."""
    calls = [m.call for m in members if m.call is not None]
    names = [m.name for m in members]
    async with asyncio.timeout(STEP_S):
        for member, call in zip(members, calls, strict=True):
            others = [n for n in names if n != member.name]
            await call.until(lambda c, o=others: all(c.hearing.frames[n] > 10 for n in o))  # type: ignore[misc]
    seconds = WavFileSource(speech_sample()).duration_s
    print(
        f"Talking: everyone plays {seconds:.1f} s of speech at once; each member records every "
        "other member separately...",
        file=out,
        flush=True,
    )
    for member in members:
        for recorder in member.recorders.values():
            recorder.armed = True
    for call in calls:
        call.play(WavFileSource(speech_sample()))
    await asyncio.sleep(seconds + MARGIN_S)
    return seconds


def _report(members: list[Member], out: TextIO) -> list[str]:
    problems: list[str] = []
    codes = {m.name: m.call.code if m.call else None for m in members}
    epoch = members[0].call.epoch if members[0].call else 0
    print(f"Group security code (epoch {epoch}), as each screen shows it:", file=out)
    for name, code in codes.items():
        print(f"  {name:<6} sees  {_code_text(code)}", file=out)
    equal = None not in codes.values() and len({str(c) for c in codes.values()}) == 1
    print(f"  equal: {'yes (nobody is in the middle)' if equal else 'NO'}", file=out)
    if not equal:
        problems.append("the group security codes differ")
    speech = load_wav(speech_sample(), SAMPLE_RATE)
    names = [m.name for m in members]
    print("PESQ-WB of the speech, speaker (row) -> listener (column):", file=out)
    print("  " + " " * 8 + "".join(f"{n:>8}" for n in names), file=out)
    for speaker in names:
        cells = []
        for listener in members:
            if listener.name == speaker:
                cells.append(f"{'-':>8}")
                continue
            path = listener.records / f"{speaker}-to-{listener.name}.wav"
            score = None
            if path.exists():
                score = compare(speech, load_wav(path, SAMPLE_RATE), max_lag_s=2.0).pesq_wb
            cells.append(f"{'n/a' if score is None else f'{score:.2f}':>8}")
            if score is None or score < MIN_PESQ:
                problems.append(f"{speaker} -> {listener.name}: PESQ-WB {score}")
        print(f"  {speaker:<8}" + "".join(cells), file=out)
    dropped: dict[str, int] = {}
    for m in members:
        if m.call is not None:
            for reason in ("forged", "bad_sframe", "bad_envelope", "replay"):
                dropped[reason] = dropped.get(reason, 0) + m.call.dropped.get(reason, 0)
    summary = ", ".join(f"{k} {v}" for k, v in dropped.items())
    print(f"Refused on the way (all members): {summary}", file=out)
    return problems


async def run_group_demo(*, n: int, out: TextIO, keep: Path | None = None) -> ExitCode:
    """Run the group demo with ``n`` members (3..8); recordings go to ``keep`` if given."""
    if not MIN_MEMBERS <= n <= MAX_MEMBERS:
        print(f"voice demo: --group takes {MIN_MEMBERS} to {MAX_MEMBERS} members", file=out)
        return ExitCode.USAGE
    with tempfile.TemporaryDirectory(prefix="voice-group-demo-") as tmp:
        root = Path(tmp)
        records = Path(keep) if keep is not None else root / "recordings"
        records.mkdir(parents=True, exist_ok=True)
        members = [Member(name, root, records) for name in NAMES[:n]]
        config = Config(
            port=0, http_port=0, db=":memory:", registration_ip_burst=MAX_MEMBERS, rate=200.0
        )
        async with serve_signaling(config) as server, run_janus(root / "janus") as janus:
            url = f"ws://127.0.0.1:{server.port}"
            print(f"voice demo --group {n}: an end-to-end encrypted group call", file=out)
            print(f"  signaling  {url} (embedded: routes sealed envelopes only)", file=out)
            print(f"  janus      {janus.url} (SFU: forwards sealed frames only)", file=out)
            out.flush()
            try:
                await _assemble(members, url, janus.url, out)
                await _talk(members, out)
            except Exception as exc:  # the demo says what failed instead of a traceback
                print(f"Result: FAILED: {type(exc).__name__}: {exc}", file=out, flush=True)
                return ExitCode.CALL_FAILED
            finally:
                for member in members:
                    with contextlib.suppress(Exception):
                        await member.close()
        problems = _report(members, out)
        if keep is not None:
            print(f"Recordings: {records}/<speaker>-to-<listener>.wav", file=out)
    if problems:
        print("Result: FAILED: " + "; ".join(problems), file=out, flush=True)
        return ExitCode.CALL_FAILED
    print("Result: OK (one group code, every member heard every other).", file=out, flush=True)
    return ExitCode.OK
