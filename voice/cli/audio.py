"""What a call in the CLI hears and says: a device, a WAV file, a tone or silence.

The first source/sink pair is built before logging in, so a missing device or an unreadable WAV
file fails fast (NoAudioDevice / LOCAL_ERROR) instead of after the other side answered. PortAudio
streams open at construction but start on first use, so an idle prepared pair costs nothing.

A microphone goes through the audio front end (echo cancellation, noise suppression, gain
control: voice/audio/frontend.py), fed with every frame the sink plays as the echo reference,
unless ``--no-audio-processing``. WAV files, tones and silence never do: there is no room in them.

Devices are live (voice/audio/switch.py): they can be switched during a call, and one that goes
away is replaced by the default device with a notice, handed to ``on_notice`` (or logged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from voice.audio.base import AudioSink, AudioSource
from voice.audio.sinks import NullSink, WavRecorder
from voice.audio.sources import SilenceSource, ToneSource, WavFileSource
from voice.errors import UsageError

log = logging.getLogger("voice.cli")


@dataclass(frozen=True)
class AudioChoice:
    """The audio options of ``listen`` and ``call``; at most one source and one sink."""

    input: str | None = None  # pyaudio device (name or index) for the microphone
    output: str | None = None  # pyaudio device (name or index) for the speaker
    play: Path | None = None  # WAV file to send instead of a microphone
    tone: float | None = None  # send a sine tone of this frequency
    silence: bool = False  # send silence (receive-only)
    record: Path | None = None  # write what we hear to this WAV file
    mute_output: bool = False  # hear nothing (a headless listener that only sends)
    processing: bool = True  # echo cancellation, noise suppression, gain control (microphone)
    # told when a device went away and the default replaced it (None: logged as a warning)
    on_notice: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AudioChoice:
        """From the audio options of ``call``, ``listen``, ``ui`` and ``doctor``."""
        return cls(
            input=args.input,
            output=args.output,
            play=args.play,
            tone=args.tone,
            silence=args.silence,
            record=args.record,
            mute_output=args.no_output,
            processing=not getattr(args, "no_audio_processing", False),
        )

    def __post_init__(self) -> None:
        sources = [self.input is not None, self.play is not None, self.tone is not None]
        if sum(sources) + self.silence > 1:
            raise UsageError("choose one of --input, --play, --tone, --silence")
        if (self.output is not None) + (self.record is not None) + self.mute_output > 1:
            raise UsageError("choose one of --output, --record, --no-output")
        if self.tone is not None and not 20.0 <= self.tone <= 20_000.0:
            raise UsageError("--tone is a frequency in Hz between 20 and 20000")

    @property
    def uses_devices(self) -> bool:
        return self.input_is_device or self.output_is_device

    @property
    def input_is_device(self) -> bool:
        return self.play is None and self.tone is None and not self.silence

    @property
    def output_is_device(self) -> bool:
        return self.record is None and not self.mute_output

    @property
    def front_end(self) -> bool:
        """Whether the microphone's frames go through the audio front end."""
        return self.input_is_device and self.processing

    def describe(self) -> str:
        if self.play is not None:
            said = f"playing {self.play}"
        elif self.tone is not None:
            said = f"a {self.tone:g} Hz tone"
        elif self.silence:
            said = "silence"
        else:
            said = f"microphone {self.input or '(default)'}"
            if self.front_end:
                said += " with echo cancellation"
        if self.record is not None:
            heard = f"recording to {self.record}"
        elif self.mute_output:
            heard = "no output"
        else:
            heard = f"speaker {self.output or '(default)'}"
        return f"{said}; {heard}"

    async def build(self) -> tuple[AudioSource, AudioSink]:
        """Open a fresh source and sink (raises NoAudioDevice, FileNotFoundError, ...)."""
        return self.open_now()

    def open_now(self) -> tuple[AudioSource, AudioSink]:
        """:meth:`build` without awaiting: for the phone's audio factory, which is called
        synchronously while a call is set up. On an error, what was opened is closed in the
        background."""
        source = self._source()
        try:
            sink = self._sink()
        except BaseException:
            _close_soon(source)
            raise
        if not self.front_end:
            return source, sink
        from voice.audio.frontend import with_front_end  # loads WebRTC's APM: devices only

        try:
            return with_front_end(source, sink)
        except BaseException:
            _close_soon(source)
            _close_soon(sink)
            raise

    def _source(self) -> AudioSource:
        if self.play is not None:
            return WavFileSource(self.play)
        if self.tone is not None:
            return ToneSource(self.tone)
        if self.silence:
            return SilenceSource()
        from voice.audio.switch import LiveMicrophone  # PortAudio only when needed

        return LiveMicrophone(_spec(self.input), on_notice=self.on_notice)

    def _sink(self) -> AudioSink:
        if self.record is not None:
            return WavRecorder(self.record)
        if self.mute_output:
            return NullSink()
        from voice.audio.switch import LiveSpeaker

        return LiveSpeaker(_spec(self.output), on_notice=self.on_notice)


def _spec(device: str | None) -> str | int | None:
    if device is None:
        return None
    return int(device) if device.strip().isdigit() else device


def _close_soon(stream: AudioSource | AudioSink) -> None:
    with contextlib.suppress(RuntimeError):  # no running loop: nothing was started either
        task = asyncio.get_running_loop().create_task(stream.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()  # keeps the background closes referenced


class AudioPlan:
    """Hands each call its source/sink pair: the first is the one prepared before logging in
    (so a missing device fails fast), each later call of a ``listen`` gets a fresh one, opened
    as it is set up (a WAV file plays from its start again; ``--record`` starts the file over,
    so it keeps the latest call). If that fails (a device unplugged meanwhile), the call goes on
    with silence and says so in the log rather than failing inside the controller.
    """

    def __init__(self, choice: AudioChoice, pair: tuple[AudioSource, AudioSink]) -> None:
        self.choice = choice
        self._prepared: tuple[AudioSource, AudioSink] | None = pair

    @classmethod
    async def prepare(cls, choice: AudioChoice) -> AudioPlan:
        return cls(choice, await choice.build())

    def __call__(self, _call: object) -> tuple[AudioSource, AudioSink]:
        if self._prepared is not None:
            pair, self._prepared = self._prepared, None
            return pair
        try:
            return self.choice.open_now()
        except Exception as exc:
            log.warning("could not open the audio for this call (%s): it goes on silent", exc)
            return SilenceSource(), NullSink()

    async def close(self) -> None:
        """Close the prepared pair if no call took it."""
        if self._prepared is not None:
            source, sink = self._prepared
            self._prepared = None
            await source.close()
            await sink.close()
