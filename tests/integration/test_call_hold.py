"""Mute, hold and resume in a real call (real server, real phones, tones each way): what each
side hears at every step, and a hold longer than the reconnect window that ends nothing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.integration.conftest import WAIT, MakePhone, MakeUser
from voice.audio.sources import ToneSource
from voice.call.events import EndReason, HoldState, State
from voice.errors import CallControlError, CallEnded
from voice.phone import Call

A_HZ, B_HZ = 440.0, 1000.0
SETTLE = 0.4  # s for a change to reach the other side's speaker (signaling, jitter buffer)
LISTEN = 1.0  # s of audio judged per step
MEDIA_TIMEOUT = 2.5  # the reconnect window, shortened: the hold below outlasts it
HOLD_FOR = 4.0


def dominant_hz(frames: list[bytes]) -> float:
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * 48_000 / samples.size)


def peak(frames: list[bytes]) -> int:
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.int32)
    return int(np.abs(samples).max()) if samples.size else 0


def hears_tone(frames: list[bytes], hz: float) -> bool:
    return len(frames) > 25 and abs(dominant_hz(frames) - hz) < 5 and peak(frames) > 4000


def received(call: Call) -> int:
    stats = call.media_stats()
    assert stats is not None
    return stats.rtp_packets_received


async def test_mute_hold_and_resume_in_a_real_call(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice = make_user("alice", source=lambda: ToneSource(A_HZ, amplitude=10_000.0))
    bob = make_user("bob", source=lambda: ToneSource(B_HZ, amplitude=10_000.0))
    pa = await make_phone(alice, media_timeout=MEDIA_TIMEOUT)
    pb = await make_phone(bob, media_timeout=MEDIA_TIMEOUT)
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await inc.accept()
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    a_sink, b_sink = alice.sinks[0], bob.sinks[0]

    async def listen(seconds: float = LISTEN) -> tuple[list[bytes], list[bytes]]:
        """What alice and bob played over ``seconds``, once the last change had time to land."""
        await asyncio.sleep(SETTLE)
        a0, b0 = len(a_sink.frames), len(b_sink.frames)
        await asyncio.sleep(seconds)
        return a_sink.frames[a0:], b_sink.frames[b0:]

    a_heard, b_heard = await listen()
    assert hears_tone(a_heard, B_HZ) and hears_tone(b_heard, A_HZ)

    # Mute: bob hears digital silence, alice still hears bob; nobody is told.
    out.mute()
    a_heard, b_heard = await listen()
    assert out.muted and hears_tone(a_heard, B_HZ) and len(b_heard) > 25 and peak(b_heard) < 50
    assert out.hold_state == inc.hold_state == HoldState()
    out.mute(False)
    a_heard, b_heard = await listen()
    assert hears_tone(a_heard, B_HZ) and hears_tone(b_heard, A_HZ)

    # Hold by alice: bob is told (sealed), and neither side plays or sends anything ...
    with pytest.raises(CallControlError, match="not holding"):
        await inc.resume()  # bob cannot take alice's hold off
    await out.hold()
    assert await asyncio.wait_for(inc.next_hold_change(), WAIT) == HoldState(remote=True)
    assert await asyncio.wait_for(out.next_hold_change(), WAIT) == HoldState(local=True)
    assert out.on_hold and inc.on_hold
    with pytest.raises(CallControlError, match="already on hold"):
        await out.hold()
    rx_a, rx_b = received(out), received(inc)
    a_heard, b_heard = await listen(HOLD_FOR)
    assert len(a_heard) > 100 and len(b_heard) > 100 and peak(a_heard) == peak(b_heard) == 0
    # ... while the packets keep coming at the full rate: the reconnect window (shorter than
    # the hold) never opens, nothing says "reconnecting", the call stays up.
    rate = 50 * (HOLD_FOR + SETTLE) * 0.8
    assert received(out) - rx_a > rate and received(inc) - rx_b > rate
    assert not out.reconnecting and not inc.reconnecting
    for call in (out, inc):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call.next_notice(), 0.05)
    assert out.state is inc.state is State.CONNECTED

    # Resume: both hear each other again.
    await out.resume()
    assert await asyncio.wait_for(inc.next_hold_change(), WAIT) == HoldState()
    a_heard, b_heard = await listen()
    assert out.hold_state == inc.hold_state == HoldState()
    assert hears_tone(a_heard, B_HZ) and hears_tone(b_heard, A_HZ)

    await out.hangup()
    assert (await inc.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE
    assert pa.dropped["rejected"] == pb.dropped["rejected"] == 0
    with pytest.raises(CallEnded):
        out.mute()
    with pytest.raises(CallEnded):
        await inc.hold()
