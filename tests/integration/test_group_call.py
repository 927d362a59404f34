"""Group calls end to end: a real signaling server (in process), a real Janus, real aiortc and
Opus. Most tests give each member its own tone, so "heard" means: the dominant frequency of what
a listener decoded from a speaker is that speaker's tone; the last one runs the group demo,
speech from everyone and a PESQ-WB score for every ordered pair. Keys, signatures and the group
code are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from signaling.server import SignalingServer
from tests.adversarial.malicious_server import Behaviour, Envelope, MaliciousServer
from tests.integration.conftest import url_of
from tests.support.janus import running_janus
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.crypto.contacts import ContactBook
from voice.crypto.envelope import open_envelope, seal
from voice.crypto.identity import Identity
from voice.errors import CodecError, SFrameError
from voice.exitcodes import ExitCode
from voice.group import messages as gm
from voice.group.demo import MIN_PESQ, run_group_demo
from voice.group.frameauth import FrameSigner
from voice.group.keys import SUITE, PeerKeys, parse_group_kid
from voice.group.media import RoomMedia
from voice.group.session import GroupCall
from voice.group.sframe import Header, SFrameSender
from voice.media.opus import SAMPLE_RATE, OpusDecoder
from voice.net.client import SignalingClient

pytestmark = pytest.mark.timeout(90)

NAMES = ("alice", "bob", "carol", "dave", "erin")
TONES = {"alice": 440.0, "bob": 660.0, "carol": 880.0, "dave": 1100.0, "erin": 1320.0}
WAIT = 30.0  # generous: a loaded 2-core machine runs Janus and every member


@dataclass
class Person:
    name: str
    client: SignalingClient
    identity: Identity
    contacts: ContactBook
    call: GroupCall
    heard: dict[str, MemorySink] = field(default_factory=dict)
    mix: MemorySink = field(default_factory=MemorySink)


def dominant_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


class Group:
    """The creator (alice) and members, each with its own client, identity and contacts."""

    def __init__(self, url: str, janus_url: str, home: Path) -> None:
        self.url, self.janus_url, self.home = url, janus_url, home
        self.people: dict[str, Person] = {}

    async def _person(self, name: str, *, creator: bool) -> Person:
        identity = Identity.generate()
        contacts = ContactBook(self.home / name / "contacts.json")
        client = await SignalingClient.connect(self.url, name, identity.public_key, identity.sign)
        heard: dict[str, MemorySink] = {}
        mix = MemorySink()

        def sink_for(user: str) -> MemorySink:
            return heard.setdefault(user, MemorySink())

        if creator:
            call = await GroupCall.create(
                client, identity, contacts, self.janus_url, sink_for=sink_for, mixed=mix
            )
        else:
            call = GroupCall.listen(
                client, identity, contacts, auto_accept=True, sink_for=sink_for, mixed=mix
            )
            await call.control.peer_key(NAMES[0])  # the creator is a pinned contact
        person = Person(name, client, identity, contacts, call, heard, mix)
        self.people[name] = person
        return person

    @property
    def creator(self) -> GroupCall:
        return self.people[NAMES[0]].call

    def live(self) -> list[Person]:
        return [p for p in self.people.values() if not p.call.ended.is_set()]

    async def join(self, name: str) -> Person:
        """Invite ``name`` and wait until every member has the new epoch's code."""
        person = await self._person(name, creator=False)
        epoch = self.creator.epoch + 1
        await self.creator.invite(name)
        await self.settled(epoch)
        return person

    async def settled(self, epoch: int) -> None:
        """Until every live member is at ``epoch`` and has its code."""
        async with asyncio.timeout(WAIT):
            await self.creator.until(lambda c: c.epoch >= epoch)
            for p in self.live():
                await p.call.until(lambda c: c.epoch == epoch and c.code is not None)

    async def hear_everyone(self, frames: int = 50) -> None:
        """Until every live member decoded ``frames`` frames from every other live member."""
        names = [p.name for p in self.live()]
        async with asyncio.timeout(WAIT):
            for p in self.live():
                others = [n for n in names if n != p.name]
                await p.call.until(
                    lambda c, o=others: all(c.hearing.frames[n] >= frames for n in o)  # type: ignore[misc]
                )

    async def close(self) -> None:
        for p in self.people.values():
            await p.call.close()
            await p.client.close()


@contextlib.asynccontextmanager
async def group_of(
    server: SignalingServer | str, tmp_path: Path, n: int, *, tones: bool = True
) -> AsyncIterator[Group]:
    url = server if isinstance(server, str) else url_of(server)
    async with running_janus(tmp_path) as janus:
        group = Group(url, janus.url, tmp_path)
        try:
            await group._person(NAMES[0], creator=True)
            for name in NAMES[1:n]:
                await group.join(name)
            if tones:
                for p in group.people.values():
                    p.call.play(ToneSource(TONES[p.name]))
            yield group
        finally:
            await group.close()


def codes(group: Group) -> set[str]:
    return {str(p.call.code) for p in group.live()}


async def test_four_members_hear_each_other_and_see_one_code(
    server: SignalingServer, tmp_path: Path
) -> None:
    async with group_of(server, tmp_path, 4) as group:
        payloads: dict[str, list[bytes]] = {}
        dave = group.people["dave"].call
        dave.tap = lambda user, payload: payloads.setdefault(user, []).append(payload)
        await group.hear_everyone(frames=60)
        # A frame one member forges under another member's KID (alice's, sent by bob's key
        # layer with bob's signing key) is refused at dave and counted.
        # Bob holds alice's sender key, so he can seal a frame under her KID; signed with his
        # own frame key it is refused at dave (and counted), as is one signed with a stranger's.
        bob = group.people["bob"].call
        alice_key = bob.peers.get(0)
        assert alice_key is not None and bob.stream is not None
        alice_sframe = SFrameSender(alice_key.kid, alice_key.base_key, SUITE, ctr=10**6)
        before = dave.dropped.get("forged", 0)
        dave.hearing.receive(bob.signer.sign(alice_sframe.protect(b"x" * 80)))
        assert dave.dropped.get("forged", 0) == before + 1
        dave.hearing.receive(FrameSigner.generate().sign(alice_sframe.protect(b"y" * 80)))
        assert dave.dropped.get("forged", 0) == before + 2

        assert len(codes(group)) == 1, "every member must see the same group code"
        assert group.creator.epoch == 3
        for listener in group.live():
            for speaker in group.live():
                if speaker is listener:
                    continue
                pcm = listener.heard[speaker.name].pcm()
                hz = dominant_hz(pcm[-len(pcm) // 2 :])
                assert abs(hz - TONES[speaker.name]) < 15, f"{speaker.name} -> {listener.name}"
        # The mix a listener's speaker would play holds every other member's tone.
        for listener in group.live():
            spectrum = np.abs(np.fft.rfft(listener.mix.samples()[-SAMPLE_RATE:]))
            floor = float(np.median(spectrum))
            for speaker in group.live():
                if speaker is not listener:
                    peak = float(spectrum[int(TONES[speaker.name])])  # 1 Hz bins over 1 s
                    assert peak > 100 * floor, f"{speaker.name} missing in {listener.name}'s mix"

    # What Janus forwarded to dave: SFrame ciphertexts with a signature, under the KID of
    # the member whose feed it was; none of them is Opus a decoder takes as the audio.
    indices = {p.name: p.call.index for p in group.people.values()}
    for user, frames in payloads.items():
        assert len(frames) >= 60
        for payload in frames[-20:]:
            header, _ = Header.decode(payload[:-64])
            assert parse_group_kid(header.kid)[0] == indices[user]
        with OpusDecoder() as decoder:
            pcm = b"".join(_try_decode(decoder, p) for p in frames[-50:])
        if pcm:
            assert abs(dominant_hz(pcm) - TONES[user]) > 15, f"{user}'s tone is in clear"


def _try_decode(decoder: OpusDecoder, payload: bytes) -> bytes:
    try:
        return decoder.decode(payload)
    except CodecError:
        return b""


async def test_removed_member_and_late_joiner_cannot_decrypt(
    server: SignalingServer, tmp_path: Path
) -> None:
    async with group_of(server, tmp_path, 3) as group:
        before: list[bytes] = []
        alice = group.creator
        alice.tap = lambda user, payload: before.append(payload) if user == "bob" else None
        await group.hear_everyone(frames=30)
        alice.tap = None
        # Late joiner: dave's keys open nothing bob sent before dave joined.
        dave = await group.join("dave")
        await group.hear_everyone(frames=20)
        assert _opened(dave.call.peers, before) == 0
        # Removal: carol keeps her keys; bob's frames after the removal stay shut to her.
        carol = group.people["carol"].call
        after: list[bytes] = []
        await alice.remove("carol")
        await carol.until(lambda c: c.ended.is_set())
        await group.settled(group.creator.epoch)
        alice.tap = lambda user, payload: after.append(payload) if user == "bob" else None
        await asyncio.sleep(1.0)
        alice.tap = None
        assert len(after) >= 20
        assert _opened(carol.peers, after) == 0
        # A member still can (a copy of dave's key for bob: dave's own replay window has seen
        # these frames already).
        dave_keys = PeerKeys()
        bob_key = dave.call.peers.get(1)
        assert bob_key is not None
        dave_keys.install(bob_key, 0.0)
        assert _opened(dave_keys, after) > 0


def _opened(peers: PeerKeys, payloads: list[bytes]) -> int:
    """How many of ``payloads`` (signed SFrames) ``peers`` opens now."""
    now = time.monotonic()  # the sessions' clock
    count = 0
    for payload in payloads:
        try:
            peers.unprotect(payload[:-64], now)
            count += 1
        except SFrameError:
            pass
    return count


async def test_a_vanished_member_is_dropped_within_10_s(
    server: SignalingServer, tmp_path: Path
) -> None:
    async with group_of(server, tmp_path, 3, tones=False) as group:
        await group.hear_everyone(frames=10)
        carol = group.people["carol"]
        epoch = group.creator.epoch
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        carol.client.abort()
        media = carol.call._media
        assert media is not None
        media.session._ws.transport.abort()  # no goodbye on either connection
        for task in carol.call._tasks:
            task.cancel()
        carol.call.ended.set()
        async with asyncio.timeout(10):
            for p in group.live():
                await p.call.until(
                    lambda c: c.epoch > epoch and all(m.user != "carol" for m in c.members)
                )
        assert loop.time() - t0 < 10
        await group.settled(epoch + 1)
        assert len(codes(group)) == 1


class GroupMitm(Behaviour):
    """A signaling server that sits between ``victim`` and everyone else: its key lookups give
    the victim a fake key for every other member and everyone else a fake key for the victim,
    and it re-seals every envelope to or from the victim from the fake key of the sender,
    rewriting the identity keys in the rosters the victim gets so that they look consistent
    to it. Everything between other members passes untouched."""

    def __init__(self, victim: str) -> None:
        self.victim = victim
        self.asker: str | None = None
        self.fakes: dict[str, Identity] = {}
        self.relayed = 0

    def fake(self, user: str) -> Identity:
        return self.fakes.setdefault(user, Identity.generate())

    def on_lookup(self, user: str) -> bytes | None:
        real = self.server.keys.get(user)
        if real is None or (self.asker == self.victim) == (user == self.victim):
            return real
        return self.fake(user).public_key

    async def on_send(self, envelope: Envelope) -> None:
        body = envelope.body
        if self.victim in (envelope.sender, envelope.to):
            opened = open_envelope(self.fake(envelope.to), body)
            message = gm.decode(opened.payload)
            if isinstance(message, gm.Roster):
                members = tuple(
                    dataclasses.replace(m, identity_key=self._as_seen_by_victim(m.user))
                    for m in message.members
                )
                message = dataclasses.replace(message, members=members)
            real = self.server.keys[envelope.to]
            body = seal(self.fake(envelope.sender), real, opened.header, gm.encode(message))
            self.relayed += 1
        await self.server.deliver(envelope.to, envelope.sender, body)

    def _as_seen_by_victim(self, user: str) -> bytes:
        if user == self.victim:
            return self.server.keys[user]
        return self.fake(user).public_key


class AskerServer(MaliciousServer):
    """Tells its behaviour who asks each lookup (the MITM answers per asker)."""

    async def _lookup(self, session: Any, msg_id: str, user: str) -> None:
        assert isinstance(self.behaviour, GroupMitm)
        self.behaviour.asker = session.user
        await super()._lookup(session, msg_id, user)


async def test_the_group_code_differs_for_a_member_whose_keys_the_server_substituted(
    tmp_path: Path,
) -> None:
    mitm = GroupMitm("dave")
    server = AskerServer(mitm)
    await server.start()
    try:
        async with group_of(server.url, tmp_path, 4, tones=False) as group:
            assert mitm.relayed > 0
            dave = group.people["dave"]
            honest = {str(p.call.code) for p in group.live() if p.name != "dave"}
            assert len(honest) == 1, "the members the server left alone agree"
            assert dave.call.code is not None
            assert str(dave.call.code) not in honest, "the substituted member's code differs"
            # The attack did happen: dave pinned a key for alice that is not hers.
            alice_pinned = dave.contacts.get("alice")
            assert alice_pinned is not None
            assert alice_pinned.public_key != group.people["alice"].identity.public_key
    finally:
        await server.stop()


async def test_the_group_demo_scores_speech_for_every_pair(tmp_path: Path) -> None:
    """``voice demo --group 4``: speech from everyone at once, PESQ-WB for all 12 ordered
    pairs (each listener records each speaker separately), one group code."""
    out = io.StringIO()
    code = await run_group_demo(n=4, out=out, keep=tmp_path / "recordings")
    text = out.getvalue()
    assert code == ExitCode.OK, text
    table = text.split("listener (column):\n", 1)[1].splitlines()[1:5]
    scores = [float(cell) for row in table for cell in row.split()[1:] if cell != "-"]
    assert len(scores) == 12, text
    assert min(scores) >= MIN_PESQ, text
    assert "equal: yes" in text
    assert len(list((tmp_path / "recordings").glob("*-to-*.wav"))) == 12


async def test_decoy_feeds_under_a_members_name_cannot_take_its_place(
    server: SignalingServer, tmp_path: Path
) -> None:
    """carol, a member (she has the room's pin), publishes two more feeds named "bob": one
    carrying her own signed frames, one carrying garbage. alice receives bob's real feed, drops
    the one with carol's frames for good, and hears bob."""
    async with group_of(server, tmp_path, 3) as group:
        carol = group.people["carol"].call
        assert carol._media is not None
        janus = carol._media.session
        decoys = [RoomMedia(janus, carol._media.room, carol._media.pin, "bob") for _ in range(2)]
        await decoys[0].publish(carol._next_frame)  # her frames, under bob's name
        await decoys[1].publish(lambda: b"\x00" * 100)  # noise under bob's name
        try:
            await group.hear_everyone(frames=60)
            bob = group.people["bob"].call
            assert bob._media is not None and bob._media.feed is not None
            alice = group.people["alice"].call
            real, false = bob._media.feed, decoys[0].feed
            async with asyncio.timeout(WAIT):  # the real feed in, the one with carol's frames out
                await alice.until(
                    lambda c: (
                        real in c._watch.feeds_of("bob") and false not in c._watch.feeds_of("bob")
                    )
                )
            before = alice.hearing.frames["bob"]
            async with asyncio.timeout(WAIT):  # bob goes on being heard (a loaded machine: slower)
                await alice.until(lambda c: c.hearing.frames["bob"] >= before + 50)
            assert false not in alice._watch.subscribed  # and never again what carol sent
            pcm = group.people["alice"].heard["bob"].pcm()
            assert abs(dominant_hz(pcm[-len(pcm) // 2 :]) - TONES["bob"]) < 15
        finally:
            for decoy in decoys:
                await decoy.close()
