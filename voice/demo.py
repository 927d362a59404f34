"""``voice demo``: a real end-to-end encrypted call between two temporary users on this machine.

It starts an embedded signaling server on a free loopback port, creates two users (fresh
identities and contact books in a temporary directory), and has alice call bob through the
server: sealed envelopes, the committed key agreement, ICE on loopback, SRTP keyed end to end.
Bob's phone rings; he answers after a short pause. Each side then plays the shipped speech
sample to the other and records what it hears. The demo prints both SASes (they must be equal),
the set-up and answer-to-audio times, and how well each recording matches the speech
(``voice.audio.quality.compare``: PESQ-WB and correlation). Exit code 0 only if all of that
worked; CALL_FAILED otherwise.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from signaling.config import Config
from signaling.server import serve_signaling
from voice.audio.base import SAMPLE_RATE, AudioSink, AudioSource, Int16Array
from voice.audio.quality import QualityReport, compare, segmental_correlation
from voice.audio.sinks import WavRecorder
from voice.audio.sources import WavFileSource
from voice.audio.speech import speech_sample
from voice.audio.wavfile import load_wav
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.sas import Sas
from voice.exitcodes import ExitCode
from voice.phone import Call, Phone, PhoneConfig

RING_SECONDS = 0.3  # how long bob lets it ring before answering
MIN_CORRELATION = 0.5  # below this the speech did not get through


@dataclass(frozen=True)
class Side:
    user: str
    identity: Identity
    contacts: ContactBook
    recording: Path

    def audio(self, _call: Call) -> tuple[AudioSource, AudioSink]:
        return WavFileSource(speech_sample()), WavRecorder(self.recording)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def _since(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else end - start


def _sas_text(sas: Sas | None) -> str:
    if sas is None:
        return "(none)"
    return f"{' '.join(sas.words).upper():<28} {' '.join(sas.emoji)}"


def _quality_line(label: str, q: QualityReport, sent: int, got: int, bad: int) -> str:
    pesq = "n/a" if q.pesq_wb is None else f"{q.pesq_wb:.2f}"
    delay = "n/a" if q.delay_ms is None else f"{q.delay_ms:.0f} ms"
    note = f" ({q.note})" if q.note else ""
    return (
        f"  {label:<13} PESQ-WB {pesq:<5} correlation {q.correlation:.3f}  delay {delay:<7} "
        f"packets {sent} sent / {got} authenticated, {bad} rejected{note}"
    )


def _heard_speech(speech: Int16Array, recording: Path, q: QualityReport) -> float:
    """How recognisable the speech is in ``recording``, window by window (see
    :func:`~voice.audio.quality.segmental_correlation`): a jitter-buffer step of 20 ms halves
    one overall correlation, though every word got through."""
    if q.delay_ms is None:
        return 0.0
    lag = round(q.delay_ms * SAMPLE_RATE / 1000)
    return segmental_correlation(speech, load_wav(recording, SAMPLE_RATE), lag)


async def _call(a: Side, b: Side, url: str, out: TextIO, seconds: float) -> ExitCode:
    loop = asyncio.get_running_loop()
    # Both ends are this machine: there is no address to hide and no relay to hide it behind
    # (the embedded server offers no TURN), so the relay policy has nothing to decide.
    alice = await Phone.connect(
        PhoneConfig(
            server_url=url, user=a.user, identity=a.identity, contacts=a.contacts, relay="never"
        ),
        audio=a.audio,
    )
    bob = await Phone.connect(
        PhoneConfig(
            server_url=url, user=b.user, identity=b.identity, contacts=b.contacts, relay="never"
        ),
        audio=b.audio,
    )
    try:
        print(f"{a.user} calls {b.user}...", file=out, flush=True)
        caller = await alice.call(b.user)
        callee = await asyncio.wait_for(bob.incoming(), 10)
        print(f"{b.user}'s phone rings: call from {callee.peer}.", file=out, flush=True)
        await asyncio.sleep(RING_SECONDS)
        print(f"{b.user} answers.", file=out, flush=True)
        t_answer = loop.time()
        await callee.accept()
        await caller.wait_connected(timeout=10)
        await callee.wait_connected(timeout=10)
        equal = caller.sas is not None and caller.sas == callee.sas
        print("Connected. Each screen shows the short authentication string (SAS):", file=out)
        print(f"  {a.user:<6} sees  {_sas_text(caller.sas)}", file=out)
        print(f"  {b.user:<6} sees  {_sas_text(callee.sas)}", file=out)
        verdict = "yes (nobody is in the middle)" if equal else "NO (someone is in the middle?)"
        print(f"  equal: {verdict}", file=out, flush=True)
        print(
            f"Talking: each side plays {seconds:.1f} s of speech to the other and records it...",
            file=out,
            flush=True,
        )
        await asyncio.sleep(seconds)
        stats_a, stats_b = caller.media_stats(), callee.media_stats()
        await caller.hangup()
        await asyncio.wait_for(callee.wait_ended(), 10)
        await asyncio.wait_for(caller.wait_ended(), 10)
    finally:
        await alice.close()
        await bob.close()

    ta, tb = caller.timings, callee.timings
    times = (
        (f"dial -> {b.user}'s phone rings", _since(tb.ringing_at, ta.dialed_at)),
        ("answer -> connected", _since(ta.connected_at, t_answer)),
        (f"answer -> first audio at {a.user}", _since(ta.first_audio_at, t_answer)),
        (f"answer -> first audio at {b.user}", _since(tb.first_audio_at, t_answer)),
    )
    print("Times (loopback):", file=out)
    for label, value in times:
        print(f"  {label:<32} {_ms(value)}", file=out)

    speech = load_wav(speech_sample(), SAMPLE_RATE)
    heard_b = compare(speech, load_wav(b.recording, SAMPLE_RATE), max_lag_s=2.0)
    heard_a = compare(speech, load_wav(a.recording, SAMPLE_RATE), max_lag_s=2.0)
    print("Audio (Opus 48 kHz CBR in SRTP AES-256-GCM, keys agreed end to end):", file=out)
    for label, q, tx, rx in (
        (f"{a.user} -> {b.user}", heard_b, stats_a, stats_b),
        (f"{b.user} -> {a.user}", heard_a, stats_b, stats_a),
    ):
        sent = tx.rtp_packets_sent if tx else 0
        got = rx.rtp_packets_received if rx else 0
        bad = (rx.auth_failures + rx.replays + rx.malformed) if rx else 0
        print(_quality_line(label, q, sent, got, bad), file=out)

    problems = []
    if not equal:
        problems.append("the two SASes differ")
    for who, q, recording in ((b.user, heard_b, b.recording), (a.user, heard_a, a.recording)):
        heard = _heard_speech(speech, recording, q)
        if heard < MIN_CORRELATION:
            problems.append(f"{who} did not hear the speech (correlation {heard:.2f})")
    if problems:
        print("Result: FAILED: " + "; ".join(problems), file=out, flush=True)
        return ExitCode.CALL_FAILED
    print("Result: OK (equal SAS, speech heard both ways).", file=out, flush=True)
    return ExitCode.OK


async def run_demo(
    *, out: TextIO, keep: Path | None = None, seconds: float | None = None
) -> ExitCode:
    """Run the demo, printing to ``out``; recordings go to ``keep`` if given (else deleted)."""
    talk = seconds if seconds is not None else WavFileSource(speech_sample()).duration_s + 0.6
    with tempfile.TemporaryDirectory(prefix="voice-demo-") as tmp:
        root = Path(tmp)
        records = Path(keep) if keep is not None else root
        records.mkdir(parents=True, exist_ok=True)
        sides = []
        for user in ("alice", "bob"):
            home = root / user
            sides.append(
                Side(
                    user=user,
                    identity=Identity.load_or_create(home / "identity.key"),
                    contacts=ContactBook(home / "contacts.json"),
                    recording=records / f"{user}-heard.wav",
                )
            )
        a, b = sides
        config = Config(port=0, http_port=0, db=":memory:")
        async with serve_signaling(config) as server:
            url = f"ws://127.0.0.1:{server.port}"
            print("voice demo: a real end-to-end encrypted call on this machine", file=out)
            print(f"  signaling  {url} (embedded: routes sealed envelopes only)", file=out)
            for side in sides:
                print(f"  {side.user:<9}  fingerprint {side.identity.fingerprint.human}", file=out)
            out.flush()
            try:
                code = await _call(a, b, url, out, talk)
            except Exception as exc:
                print(f"Result: FAILED: {type(exc).__name__}: {exc}", file=out, flush=True)
                return ExitCode.CALL_FAILED
        if keep is not None:
            print(f"Recordings: {a.recording}, {b.recording}", file=out, flush=True)
        return code
