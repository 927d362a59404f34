"""Real phones for the attacks: identities, contact books, configs, audio, and call helpers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.phoneconfig import phone_config
from voice.audio.base import AudioSink, AudioSource
from voice.audio.sinks import NullSink
from voice.audio.sources import ToneSource
from voice.call.events import State
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CallKeys
from voice.crypto.sas import Sas
from voice.phone import Call, Phone, PhoneConfig


@dataclass
class ObservedKeys:
    """The SRTP keys of each call as the key observer saw them (copied: they get erased)."""

    by_call: dict[bytes, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    other_secrets: list[bytes] = field(default_factory=list)  # CM and envelope keys, th, ...
    envelope_rx: dict[bytes, bytes] = field(default_factory=dict)  # the peer's, per call
    sas: dict[bytes, Sas] = field(default_factory=dict)  # what the user would be shown

    def __call__(self, call_id: bytes, keys: CallKeys) -> None:
        pair = (bytes(bytearray(keys.srtp_gcm_tx)), bytes(bytearray(keys.srtp_gcm_rx)))
        self.by_call.setdefault(bytes(call_id), []).append(pair)
        self.envelope_rx[bytes(call_id)] = bytes(bytearray(keys.envelope_rx))
        self.sas[bytes(call_id)] = keys.sas
        for value in (
            keys.srtp_cm_tx,
            keys.srtp_cm_rx,
            keys.transcript_hash,
            keys.next_retained,
            keys.envelope_tx,
            keys.envelope_rx,
        ):
            self.other_secrets.append(bytes(bytearray(value)))

    def all_keys(self) -> set[bytes]:
        return {k for pairs in self.by_call.values() for pair in pairs for k in pair}


@dataclass
class Person:
    name: str
    identity: Identity
    contacts: ContactBook
    keys: ObservedKeys = field(default_factory=ObservedKeys)

    @classmethod
    def make(cls, name: str, home: Path) -> Person:
        folder = home / name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = Identity.load_or_create(folder / "identity.key")
        return cls(name, identity, ContactBook(folder / "contacts.json"))

    def config(self, url: str, **changes: Any) -> PhoneConfig:
        base: dict[str, Any] = {
            "server_url": url,
            "user": self.name,
            "identity": self.identity,
            "contacts": self.contacts,
            "key_observer": self.keys,
            "ice_timeout": 5.0,
            "request_timeout": 5.0,
        }
        base.update(changes)
        return phone_config(**base)


AudioMaker = Callable[[Call], tuple[AudioSource, AudioSink]]


def tone_audio(call: Call) -> tuple[AudioSource, AudioSink]:
    return ToneSource(), NullSink()


@contextlib.asynccontextmanager
async def phone(
    person: Person, url: str, *, audio: AudioMaker = tone_audio, **changes: Any
) -> AsyncIterator[Phone]:
    p = await Phone.connect(person.config(url, **changes), audio=audio)
    try:
        yield p
    finally:
        await p.close()


async def connect_call(caller: Phone, callee: Phone, peer: str) -> tuple[Call, Call]:
    """Dial ``peer`` from ``caller``, accept on ``callee``; both connected."""
    out = await caller.call(peer)
    inc = await callee.incoming(timeout=10)
    await inc.accept()
    await asyncio.gather(out.wait_connected(timeout=10), inc.wait_connected(timeout=10))
    return out, inc


async def accept_call(caller: Phone, callee: Phone, peer: str) -> tuple[Call, Call]:
    """Dial ``peer`` from ``caller``, accept on ``callee``; both accepted (CONNECTED state),
    whether or not any audio authenticates (a MITM that cannot relay the media)."""
    out = await caller.call(peer)
    inc = await callee.incoming(timeout=10)
    await inc.accept()
    async with asyncio.timeout(10):
        while not out.state is inc.state is State.CONNECTED:
            if out.state.terminal or inc.state.terminal:
                raise AssertionError(f"call ended: {out.outcome} / {inc.outcome}")
            await asyncio.sleep(0.02)
    return out, inc


async def nothing_rings(p: Phone, within: float) -> bool:
    """True if no incoming call rings on ``p`` for ``within`` seconds."""
    try:
        await p.incoming(timeout=within)
    except TimeoutError:
        return True
    return False


async def audio_flows(call: Call, *, within: float = 5.0) -> bool:
    """True if the call keeps receiving authenticated RTP over the next moments."""
    stats = call.media_stats()
    if stats is None:
        return False
    before = stats.rtp_packets_received
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        now = call.media_stats()
        if now is not None and now.rtp_packets_received >= before + 5:
            return True
    return False


@contextlib.asynccontextmanager
async def two_phones(
    url: str, first: Person, second: Person, **changes: Any
) -> AsyncIterator[tuple[Phone, Phone]]:
    async with phone(first, url, **changes) as p1, phone(second, url, **changes) as p2:
        yield p1, p2


def kind_of(person: Person, body: bytes) -> str:
    """What call message an envelope addressed to ``person`` carries (the test can open it:
    with the identity key, or with the call's envelope key the key observer saw)."""
    from voice.call import messages as m
    from voice.crypto.callenvelope import is_call_envelope, open_call
    from voice.crypto.envelope import open_envelope
    from voice.errors import BadEnvelope

    if not is_call_envelope(body):
        return m.decode(open_envelope(person.identity, body).payload).TYPE
    for key in person.keys.envelope_rx.values():
        try:
            return m.decode(open_call(key, body)[1]).TYPE
        except BadEnvelope:
            continue
    raise BadEnvelope("no observed call key opens it")
