"""The untrusted server carries signaling only: it never holds a media socket, never sees a media
packet, and nothing it saw opens the SRTP; the media path never carries Opus in clear.

Everything the server received and sent is recorded by a TCP proxy in front of it (raw bytes,
unmasked WebSocket frames, and every base64 value inside them). The media side is captured with
the phones' ``on_datagram_sent`` hook and the real keys come from the ``key_observer`` hook.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pylibsrtp
import pytest
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from signaling.protocol import parse_client_frame
from signaling.server import SignalingServer
from tests.integration.conftest import WAIT, MakePhone, MakeUser, url_of, wait_until
from tests.integration.recording_proxy import RecordingProxy
from voice.crypto.keyagreement import CallKeys
from voice.media.rtcp import is_rtcp

ROOT = Path(__file__).resolve().parents[2]
TEXT, BINARY = 0x1, 0x2


@dataclass
class Side:
    wire: list[bytes] = field(default_factory=list)  # every SRTP/SRTCP datagram sent
    tx: bytes = b""
    rx: bytes = b""

    def observe(self, call_id: bytes, keys: CallKeys) -> None:
        self.tx = bytes(bytearray(keys.srtp_gcm_tx))  # copies: the call erases its keys
        self.rx = bytes(bytearray(keys.srtp_gcm_rx))

    def rtp(self) -> list[bytes]:
        return [d for d in self.wire if not is_rtcp(d)]


async def recorded_call(
    make_user: MakeUser, make_phone: MakePhone, url: str, *, packets: int, during: object = None
) -> tuple[Side, Side]:
    """alice calls bob through ``url``; ``packets`` RTP packets (20 ms each) each way."""
    alice, bob = Side(), Side()
    pa = await make_phone(
        make_user("alice"), url=url, on_datagram_sent=alice.wire.append, key_observer=alice.observe
    )
    pb = await make_phone(
        make_user("bob"), url=url, on_datagram_sent=bob.wire.append, key_observer=bob.observe
    )
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await inc.accept()
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    await wait_until(lambda: min(len(alice.rtp()), len(bob.rtp())) >= packets)
    if callable(during):
        during()
    await out.hangup()
    await asyncio.gather(out.wait_ended(WAIT), inc.wait_ended(WAIT))
    return alice, bob


def udp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                inodes.add(line.split()[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with_target = re.fullmatch(r"socket:\[(\d+)\]", _readlink(f"/proc/{pid}/fd/{fd}"))
        if with_target:
            out.add(with_target.group(1))
    return out


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


@pytest.fixture
async def server_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``python -m signaling`` in its own process; its port comes from its JSON log."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "signaling", "--port", "0", "--http-port", "0"),
        *("--db", ":memory:"),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(60):
            while True:
                line = await proc.stderr.readline()
                assert line, "the server exited before listening"
                record = json.loads(line)
                if record.get("event") == "listening":
                    break
        drain = asyncio.create_task(_drain(proc.stderr))  # never let its log pipe fill up
        yield proc, int(record["port"])
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        if drain is not None:
            drain.cancel()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def test_the_server_process_owns_no_udp_socket_and_receives_no_media(
    server_process: tuple[asyncio.subprocess.Process, int],
    make_user: MakeUser,
    make_phone: MakePhone,
) -> None:
    proc, port = server_process
    proxy = await RecordingProxy(port).start()
    seen: dict[str, set[str]] = {}

    def look() -> None:  # mid-call: media flows right now
        udp = udp_inodes()
        seen["server"] = socket_inodes(proc.pid) & udp
        seen["phones"] = socket_inodes(os.getpid()) & udp

    try:
        alice, bob = await recorded_call(make_user, make_phone, proxy.url, packets=300, during=look)
    finally:
        await proxy.close()
    # (a) no UDP socket in the server process; the same check finds the phones' ICE sockets
    assert seen["server"] == set()
    assert len(seen["phones"]) >= 2
    # (b) what the server received is signaling frames only, far smaller than the media
    # (signaling is a fixed ~9 KB per call with the ML-KEM key and ciphertext; 6 s of audio
    # each way is ~75 KB)
    frames = proxy.frames_to_server()
    assert frames and all(op in (TEXT, 0x8, 0x9, 0xA) for op, _ in frames)  # also close, pings
    for op, payload in frames:
        if op == TEXT:
            parse_client_frame(payload.decode("utf-8"))  # every one a valid signaling frame
    received = sum(len(b) for b in proxy.raw()[0::2])
    media = sum(len(d) for d in alice.wire + bob.wire)
    assert received * 5 < media, (received, media)
    # (c) no SRTP packet sent during the call appears in anything the server received or sent
    everything = proxy.everything()
    for datagram in alice.wire + bob.wire:
        for blob in everything:
            assert datagram[-24:] not in blob


def srtp_session(key: bytes) -> Session:
    policy = Policy(
        key=key,
        ssrc_type=Policy.SSRC_ANY_INBOUND,
        srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    )
    return Session(policy)


def opens(key: bytes, packet: bytes) -> bool:
    try:
        srtp_session(key).unprotect(packet)
    except pylibsrtp.Error:
        return False
    return True


async def test_srtp_hides_opus_and_nothing_the_server_saw_decrypts_it(
    server: SignalingServer, make_user: MakeUser, make_phone: MakePhone
) -> None:
    proxy = await RecordingProxy(server.port).start()
    try:
        alice, bob = await recorded_call(make_user, make_phone, proxy.url, packets=50)
    finally:
        await proxy.close()
    assert alice.tx == bob.rx and bob.tx == alice.rx and alice.tx != alice.rx
    for sender in (alice, bob):
        # With the real key the capture opens; the Opus payloads never appear in clear.
        session = srtp_session(sender.tx)
        payloads = [RtpPacket.parse(session.unprotect(d)).payload for d in sender.rtp()]
        assert len(payloads) >= 50 and all(len(p) == 100 for p in payloads)
        ciphertext = b"|".join(sender.wire)
        for payload in payloads:
            for i in range(len(payload) - 15):
                assert payload[i : i + 16] not in ciphertext
    # Every 44-byte window of everything the server saw, tried as the key: none opens a packet.
    probes = [alice.rtp()[10], bob.rtp()[10]]
    assert all(opens(side.tx, probe) for side, probe in zip((alice, bob), probes, strict=True))
    windows = 0
    for blob in proxy.everything():
        for i in range(len(blob) - 43):
            window = blob[i : i + 44]
            assert not any(opens(window, probe) for probe in probes)
            windows += 1
    assert windows > 5_000  # the recording really holds the whole signaling exchange
    # The search would catch a leak: the real key hidden in a blob is found.
    leaky = b"noise" + alice.tx + b"noise"
    assert any(opens(leaky[i : i + 44], probes[0]) for i in range(len(leaky) - 43))
    assert url_of(server) != proxy.url
