"""Decoders give up speech enhancement under load, together with the encoders.

libopus 1.5+ enhances decoded SILK speech (LACE) and conceals with a neural PLC at decoder
complexity >= 5, which costs event-loop time per frame. The receiver asks the shared media
clock's CPU governor each tick: while encoders may run at complexity >= 5 the decoder keeps its
best complexity, below that it drops to 0. With libopus 1.3.1 the decoder has no complexity at
all (max_complexity 0) and nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from voice.audio.sinks import MemorySink
from voice.errors import CodecError
from voice.media.clock import MediaClock
from voice.media.jitter import JitterBuffer
from voice.media.opus import DECODER_COMPLEXITY, OpusDecoder
from voice.media.overuse import ENHANCE_FROM_LEVEL, ComplexityGovernor, decoder_complexity
from voice.media.receiver import RtpReceiver


def test_decoders_enhance_only_while_encoders_are_not_stepped_down() -> None:
    assert decoder_complexity(9, 6) == 6
    assert decoder_complexity(ENHANCE_FROM_LEVEL, 6) == 6
    assert decoder_complexity(ENHANCE_FROM_LEVEL - 1, 6) == 0
    assert decoder_complexity(1, 6) == 0
    assert decoder_complexity(9, 0) == 0  # a library without decoder complexity


def test_set_complexity_is_capped_at_what_the_library_accepted() -> None:
    with OpusDecoder() as dec:
        best = dec.max_complexity
        assert best in (0, DECODER_COMPLEXITY)
        dec.set_complexity(10)
        assert dec.complexity == best
        dec.set_complexity(0)
        assert dec.complexity == 0
        with pytest.raises(CodecError):
            dec.set_complexity(-1)


async def _decoder_complexity_under(levels: tuple[int, ...]) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, governor=ComplexityGovernor(levels=levels))
    decoder = OpusDecoder()
    receiver = RtpReceiver(
        sink=MemorySink(),
        decoder=decoder,
        jitter=JitterBuffer(),
        remote_ssrc=1,
        on_report_block=lambda _block: None,
    )
    task = asyncio.create_task(receiver.run(clock))
    try:
        await asyncio.sleep(0.05)  # a few playout ticks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    result = decoder.max_complexity, decoder.complexity
    decoder.close()
    return result


async def test_the_receiver_follows_the_governor() -> None:
    best, relaxed = await _decoder_complexity_under((9,))
    assert relaxed == best
    best, loaded = await _decoder_complexity_under((1,))
    assert loaded == 0
