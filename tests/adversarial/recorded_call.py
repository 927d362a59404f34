"""One real call, recorded by everyone who could: the server, the network, the logs.

The malicious server routes honestly but records every frame, and it hands out TURN
credentials pointing at *its* relay: a :class:`RecordingForwarder` in front of a real coturn.
Both phones run relay-only, so every media datagram of the call crosses the forwarder (phone ->
relay and relay -> phone) and is recorded there: this is the eavesdropper on the network path.
The root logger captures everything at DEBUG (voice, signaling, aioice, websockets). The caller
speaks (the shipped speech sample) then is silent; the callee plays a tone then is silent.
Afterwards the identity key files are read back: the long-term keys, disclosed after the call.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from pathlib import Path

from signaling.turn import turn_credentials
from tests.adversarial.leakscan import capture_logs
from tests.adversarial.malicious_server import Envelope, Frame, TurnOffer, running_server
from tests.adversarial.phones import AudioMaker, ObservedKeys, Person, connect_call, phone
from tests.adversarial.udp_forwarder import Datagram, running_forwarder
from tests.support.coturn import running_coturn
from voice.audio.base import AudioSink, AudioSource
from voice.audio.sinks import NullSink
from voice.audio.sources import SilenceSource, ToneSource, WavFileSource
from voice.audio.speech import speech_sample
from voice.crypto.sas import Sas
from voice.phone import Call

SPEECH_FRAMES = 100  # 2 s of speech, then silence
SILENCE_SECONDS = 1.6
TONE_FRAMES = 50


class PhasedSource:
    """``first`` for ``frames`` frames, then ``then``; keeps every frame it produced."""

    def __init__(self, first: AudioSource, frames: int, then: AudioSource) -> None:
        self.first, self.frames, self.then = first, frames, then
        self.produced: list[bytes] = []

    async def read_frame(self) -> bytes | None:
        source = self.first if len(self.produced) < self.frames else self.then
        frame = await source.read_frame()
        if frame is None and source is self.first:
            self.frames = len(self.produced)
            frame = await self.then.read_frame()
        if frame is not None:
            self.produced.append(frame)
        return frame

    async def close(self) -> None:
        await self.first.close()
        await self.then.close()


@dataclass
class Recording:
    datagrams: list[Datagram]  # what the network eavesdropper recorded
    sent_by_phone: dict[str, list[bytes]]  # on_datagram_sent of each phone (SRTP/SRTCP)
    frames: list[Frame]  # every signaling frame the server saw or sent
    envelopes: list[Envelope]
    server_seen: list[bytes]
    logs: str
    keys: dict[str, ObservedKeys]  # per user: the per-call keys (key observer)
    identity_seeds: dict[str, bytes]  # the long-term keys, disclosed after the call
    identity_public: dict[str, bytes]
    sas: dict[str, Sas]
    call_id: bytes
    pcm_sent: dict[str, list[bytes]]
    speech_frames: int
    people: dict[str, Person] = field(default_factory=dict)


def _seed_from_key_file(path: Path) -> bytes:
    lines = path.read_text().split()
    return base64.b64decode(lines[1])


async def _call(home: Path, turn_host: str, turn_port: int, secret: bytes) -> Recording:
    alice, bob = Person.make("alice", home), Person.make("bob", home)
    sent: dict[str, list[bytes]] = {"alice": [], "bob": []}
    sources: dict[str, PhasedSource] = {}

    def make_audio(user: str) -> AudioMaker:
        def make(call: Call) -> tuple[AudioSource, AudioSink]:
            if user == "alice":
                src = PhasedSource(WavFileSource(speech_sample()), SPEECH_FRAMES, SilenceSource())
            else:
                src = PhasedSource(ToneSource(), TONE_FRAMES, SilenceSource())
            sources[user] = src
            return src, NullSink()

        return make

    async with running_forwarder((turn_host, turn_port)) as forwarder:
        username, password = turn_credentials(secret, "relay", 600, time.time())
        uri = f"turn:127.0.0.1:{forwarder.port}?transport=udp"
        turn = TurnOffer((uri,), username, password)
        async with running_server(turn=turn) as server:
            common = {"relay": "always"}
            async with (
                phone(
                    alice,
                    server.url,
                    audio=make_audio("alice"),
                    **common,
                    on_datagram_sent=sent["alice"].append,
                ) as pa,
                phone(
                    bob,
                    server.url,
                    audio=make_audio("bob"),
                    **common,
                    on_datagram_sent=sent["bob"].append,
                ) as pb,
            ):
                a, b = await connect_call(pa, pb, "bob")
                speech_s = SPEECH_FRAMES * 0.02
                await asyncio.sleep(speech_s + SILENCE_SECONDS)
                assert a.sas is not None and b.sas is not None
                sas = {"alice": a.sas, "bob": b.sas}
                await a.hangup()
                await b.wait_ended(timeout=10)
            await asyncio.sleep(0.2)
            return Recording(
                datagrams=list(forwarder.recording),
                sent_by_phone=sent,
                frames=list(server.frames),
                envelopes=list(server.envelopes),
                server_seen=server.seen_bytes(),
                logs="",
                keys={"alice": alice.keys, "bob": bob.keys},
                identity_seeds={
                    p.name: _seed_from_key_file(home / p.name / "identity.key")
                    for p in (alice, bob)
                },
                identity_public={p.name: p.identity.public_key for p in (alice, bob)},
                sas=sas,
                call_id=a.call_id,
                pcm_sent={u: s.produced for u, s in sources.items()},
                speech_frames=sources["alice"].frames,
                people={"alice": alice, "bob": bob},
            )


def record_call(home: Path) -> Recording:
    """Run the whole recorded call (coturn, forwarder, server, two phones) and return it."""
    with running_coturn(home) as coturn, capture_logs() as logs:
        recording = asyncio.run(_call(home, coturn.host, coturn.port, coturn.secret))
    recording.logs = logs.text()
    return recording
