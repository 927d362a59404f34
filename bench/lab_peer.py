"""One side of a benchmark call in a home namespace of the network lab (bench/real_network.py).

    ip netns exec NS python -m bench.lab_peer --impl ours --role callee --out F.npz \\
        --server wss://203.0.113.10:443 --ca ca.pem --conf DIR --user bob --seconds 8
    ip netns exec NS python -m bench.lab_peer --impl aiortc --role caller --out F.npz \\
        --ice '[{"urls": "stun:..."}, {"urls": "turn:...", "username": .., "credential": ..}]'

JSON lines with the parent on stdin/stdout. ``ours``: the real client (``Phone``: login over
wss, sealed offer/answer through the real signaling server, ICE with the server's STUN/TURN,
SRTP keyed end to end); the callee auto-answers and prints ``{"ready": true}`` once logged in;
the caller dials when the parent sends ``{"go": true}``. ``aiortc``: a plain RTCPeerConnection
with the same STUN/TURN servers; the SDP goes through the parent. The caller sends the looped
speech sample, the callee mouth-to-ear marks; the clock is ``time.monotonic()`` (the loop's),
which every process on the machine shares. Output: ``bench.media_peer``'s npz, whose ``extra``
has ``dial_at`` (caller), ``first_audio_at`` and ``path``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bench.media_peer import _exchange_sdp, _plain_peer, _read_line, _save, _say, _sources
from voice.audio.base import AudioSink, AudioSource
from voice.audio.sinks import MemorySink


async def run_ours(args: argparse.Namespace) -> None:
    from voice.crypto.contacts import ContactBook
    from voice.crypto.identity import Identity
    from voice.phone import Call, Phone, PhoneConfig

    loop = asyncio.get_running_loop()
    speech, marks = _sources(args.role)
    source: AudioSource | None = speech if speech is not None else marks
    assert source is not None
    sink = MemorySink(clock=loop.time)
    conf = Path(args.conf)

    def audio(_call: Call) -> tuple[AudioSource, AudioSink]:
        assert source is not None
        return source, sink

    config = PhoneConfig(
        server_url=args.server,
        user=args.user,
        identity=Identity.load_or_create(conf / "identity.key"),
        contacts=ContactBook(conf / "contacts.json", server=args.server),
        ca_file=Path(args.ca),
        relay=args.relay,
    )
    phone = await Phone.connect(config, audio=audio)
    extra: dict[str, Any] = {}
    try:
        if args.role == "callee":
            phone.auto_answer = True
            _say({"ready": True})
            while not phone.calls:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            call = phone.calls[0]
            await asyncio.wait_for(call.wait_ended(), args.seconds + 60)
        else:
            await _read_line()
            extra["dial_at"] = loop.time()
            call = await phone.call(args.peer)
            await call.wait_connected(30)
            await asyncio.sleep(args.seconds)
            await call.hangup()
            await asyncio.wait_for(call.wait_ended(), 10)
        stats = call.media_stats()
        extra["first_audio_at"] = call.timings.first_audio_at
        extra["connected_at"] = call.timings.connected_at
        extra["path"] = getattr(stats, "path", None) if stats is not None else None
    finally:
        await phone.close()
    _save(args.out, speech, marks, sink.pcm(), sink.arrivals, extra)
    _say({"done": True})


async def run_aiortc(args: argparse.Namespace) -> None:
    from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

    loop = asyncio.get_running_loop()
    speech, marks = _sources(args.role)
    servers = [RTCIceServer(**s) for s in json.loads(args.ice)]
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    extra: dict[str, Any] = {}
    async with _plain_peer(pc, speech if speech is not None else marks) as recorder:
        if args.role == "caller":
            await _read_line()  # go
            extra["dial_at"] = loop.time()
        else:
            _say({"ready": True})
        await _exchange_sdp(pc, args.role)
        await asyncio.sleep(args.seconds)
        extra["path"] = _aiortc_path(pc)
    extra["first_audio_at"] = recorder.times[0] if recorder.times else None
    _save(args.out, speech, marks, b"".join(recorder.frames), recorder.times, extra)
    _say({"done": True})


def _aiortc_path(pc: Any) -> str | None:
    """The nominated pair's local and remote candidate types (aioice internals, best effort)."""
    try:
        transport = pc.getTransceivers()[0].sender.transport.transport
        pair = transport._connection._nominated.get(1)
        return f"{pair.local_candidate.type} -> {pair.remote_candidate.type}" if pair else None
    except (AttributeError, IndexError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impl", choices=["ours", "aiortc"], required=True)
    parser.add_argument("--role", choices=["caller", "callee"], required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--server", default="")
    parser.add_argument("--ca", default="")
    parser.add_argument("--conf", default="")
    parser.add_argument("--user", default="")
    parser.add_argument("--peer", default="")
    parser.add_argument("--ice", default="[]")
    parser.add_argument("--relay", choices=["auto", "always", "never"], default="auto")
    args = parser.parse_args()
    asyncio.run(run_ours(args) if args.impl == "ours" else run_aiortc(args))


if __name__ == "__main__":
    main()
