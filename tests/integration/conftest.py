"""Integration fixtures: a real signaling server on port 0, users with their own identity and
contact book in a temporary XDG config dir, and Phones with real MediaSessions on loopback.

Audio: every call gets a fresh source from the user's ``source`` factory (a tone unless a test
says otherwise) and a MemorySink that the test can read afterwards (``user.sinks``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from signaling.config import Config
from signaling.server import SignalingServer, serve_signaling
from tests.signaling.helpers import PERMISSIVE
from tests.support.phoneconfig import phone_config
from voice.audio.base import AudioSink, AudioSource
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.phone import Call, Phone, PhoneConfig

WAIT = 20.0  # generous: every wait in these tests is bounded, never a timing assertion


async def wait_until(predicate: Callable[[], bool], limit: float = WAIT) -> None:
    """Poll state that other tasks change (media counters, sinks), for at most ``limit`` s."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def server_config(**changes: Any) -> Config:
    base: dict[str, Any] = {"port": 0, "http_port": 0, "db": ":memory:"}
    base["max_connections_per_ip"] = 1_000
    base.update(PERMISSIVE)  # tests register and look up many names from one address
    base.update(changes)
    return Config(**base)


def url_of(server: SignalingServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


@dataclass
class User:
    """One person: a config dir (identity + contacts) that outlives any one Phone."""

    name: str
    home: Path
    source: Callable[[], AudioSource] = field(default=lambda: ToneSource(440.0))
    sinks: list[MemorySink] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.identity = Identity.load_or_create(self.home / "voice" / "identity.key")
        self.contacts = ContactBook(self.home / "voice" / "contacts.json")

    def audio(self, call: Call) -> tuple[AudioSource, AudioSink]:
        sink = MemorySink()
        self.sinks.append(sink)
        self.calls.append(call)
        return self.source(), sink

    def config(self, url: str, **changes: Any) -> PhoneConfig:
        return phone_config(
            server_url=url,
            user=self.name,
            identity=self.identity,
            contacts=self.contacts,
            **changes,
        )


MakeUser = Callable[..., User]
MakePhone = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def server() -> AsyncIterator[SignalingServer]:
    async with serve_signaling(server_config()) as s:
        yield s


@pytest.fixture
def make_user(tmp_path: Path) -> MakeUser:
    def make(name: str, **kwargs: Any) -> User:
        return User(name, tmp_path / name, **kwargs)

    return make


@pytest.fixture
async def make_phone(server: SignalingServer) -> AsyncIterator[MakePhone]:
    """``await make_phone(user, url=None, auto_answer=False, **config)``; closed at teardown."""
    phones: list[Phone] = []

    async def make(
        user: User, *, url: str | None = None, auto_answer: bool = False, **changes: Any
    ) -> Phone:
        config = user.config(url or url_of(server), **changes)
        phone = await Phone.connect(config, audio=user.audio, auto_answer=auto_answer)
        phones.append(phone)
        return phone

    yield make
    await asyncio.gather(*(p.close() for p in phones))
