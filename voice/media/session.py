"""MediaSession: the audio path of one call, as the call controller drives it.

    create() -> local_description() --(sealed call messages)--> peer
    connect(peer description)        ICE checks; may run while the phone rings
    set_keys(tx=..., rx=...)         SRTP keys from the e2e key agreement (before or after ICE)
    start()                          after accept: send and play out
    close()                          hang-up: cancel every task, close ICE, drop the keys

Nothing is sent before :meth:`start` (and not before ICE and the keys are both ready); packets
that arrive before the keys are set are dropped and counted. Packet flow and the description
format: docs/media.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aioice import Connection
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

from voice.audio.base import AudioSink, AudioSource
from voice.errors import MediaError
from voice.media import ice
from voice.media.clock import MediaClock
from voice.media.description import RemoteDescription, codec_description, parse_description
from voice.media.ice import TurnServer
from voice.media.jitter import JitterBuffer
from voice.media.loss import LossModel, as_send_filter
from voice.media.opus import OpusDecoder, OpusEncoder, OpusSettings
from voice.media.receiver import PlayoutCounters, RtpReceiver
from voice.media.rtcp import is_rtcp, is_rtp_or_rtcp, round_trip_seconds
from voice.media.sender import RtpSender
from voice.media.srtp import SrtpContext, SrtpCounters
from voice.media.stats import Counters, MediaStats

__all__ = ["LossModel", "MediaSession", "MediaStats", "OpusSettings", "TurnServer"]

logger = logging.getLogger(__name__)

RTCP_INTERVAL = 1.0  # seconds, randomised by +-25 % per report (RFC 3550 section 6.2)


class MediaSession:
    """One call's audio transport; build it with :meth:`create`."""

    def __init__(
        self,
        *,
        connection: Connection,
        source: AudioSource,
        sink: AudioSink,
        opus: OpusSettings,
        send_filter: Callable[[bytes], bool] | None,
        on_datagram_sent: Callable[[bytes], None] | None,
        ice_timeout: float,
        rng: random.Random,
    ) -> None:
        self._connection = connection
        self._source = source
        self._sink = sink
        self._opus = opus
        self._send_filter = send_filter
        self._on_datagram_sent = on_datagram_sent
        self._ice_timeout = ice_timeout
        self._rng = rng
        self.ssrc = secrets.randbits(32)
        self.first_audio = asyncio.Event()
        self._encoder = OpusEncoder(opus)
        self._sender = RtpSender(
            source=source,
            encoder=self._encoder,
            send_rtp=self._send_rtp,
            ssrc=self.ssrc,
            initial_seq=secrets.randbits(16),
            initial_timestamp=secrets.randbits(32),
            initial_loss_perc=opus.packet_loss_perc,
            fec_on_demand=True,
        )
        self._decoder: OpusDecoder | None = None
        self._receiver: RtpReceiver | None = None
        self._srtp: SrtpContext | None = None
        self._srtp_counters = SrtpCounters()
        self._remote: RemoteDescription | None = None
        self._connected = asyncio.Event()
        self._ice_lost = False
        self._keys_set = asyncio.Event()
        self._connect_called = False
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._ice_connect_seconds: float | None = None
        self._started_at: float | None = None
        self._error: str | None = None
        self._srtp_sizes: set[int] = set()
        self._srtp_sizes_received: set[int] = set()
        self._rtt: float | None = None
        self._c = Counters()

    @classmethod
    async def create(
        cls,
        *,
        controlling: bool,
        source: AudioSource,
        sink: AudioSink,
        host_addresses: Sequence[str] = ("127.0.0.1",),
        turn: TurnServer | None = None,
        relay_only: bool = False,
        opus: OpusSettings = OpusSettings(),  # noqa: B008 (frozen dataclass)
        loss: LossModel | None = None,
        send_filter: Callable[[bytes], bool] | None = None,
        on_datagram_sent: Callable[[bytes], None] | None = None,
        ice_timeout: float = ice.DEFAULT_CONNECT_TIMEOUT,
        rng: random.Random | None = None,
    ) -> MediaSession:
        """Gather ICE candidates and get ready; the session owns ``source`` and ``sink``.

        ``loss`` or ``send_filter`` (return False to drop; it sees the SRTP packet) inject loss
        on the outgoing RTP path, for tests and benchmarks. ``on_datagram_sent`` observes every
        media datagram (SRTP and SRTCP) handed to the socket; aioice's own STUN checks are not
        included. ``rng`` only spreads the RTCP report times.
        """
        if loss is not None and send_filter is not None:
            raise MediaError("give either loss or send_filter, not both")
        if loss is not None:
            send_filter = as_send_filter(loss)
        connection = ice.make_connection(controlling=controlling, turn=turn, relay_only=relay_only)
        try:
            await ice.gather(connection, host_addresses)
            return cls(
                connection=connection,
                source=source,
                sink=sink,
                opus=opus,
                send_filter=send_filter,
                on_datagram_sent=on_datagram_sent,
                ice_timeout=ice_timeout,
                rng=rng or random.Random(),
            )
        except BaseException:
            await connection.close()  # no socket left open behind a failed create()
            raise

    def local_description(self) -> dict[str, Any]:
        """What the peer needs to reach us and decode us (JSON-able; see docs/media.md)."""
        return {
            "ice": {
                "ufrag": self._connection.local_username,
                "pwd": self._connection.local_password,
                "candidates": ice.candidates_to_sdp(self._connection),
            },
            "ssrc": self.ssrc,
            "codec": codec_description(self._opus.bitrate),
        }

    async def connect(self, remote: dict[str, Any]) -> None:
        """Validate the peer's description and run ICE (raises BadDescription / IceFailed)."""
        if self._closed:
            raise MediaError("media session is closed")
        if self._connect_called:
            raise MediaError("connect() was already called")
        self._remote = parse_description(remote)
        self._connect_called = True
        self._decoder = OpusDecoder()
        self._receiver = RtpReceiver(
            sink=self._sink,
            decoder=self._decoder,
            jitter=JitterBuffer(),
            remote_ssrc=self._remote.ssrc,
            on_report_block=self._on_report_block,
            first_audio=self.first_audio,
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        await ice.connect(
            self._connection,
            ufrag=self._remote.ufrag,
            pwd=self._remote.pwd,
            candidates=self._remote.candidates,
            connect_timeout=self._ice_timeout,
        )
        if self._closed:
            raise MediaError("media session was closed during connect()")
        self._ice_connect_seconds = loop.time() - began
        self._connected.set()
        self._spawn(self._recv_loop(), "recv")

    def set_keys(self, *, tx: bytes, rx: bytes) -> None:
        """Install the SRTP keys (44-byte AES-256-GCM key||salt per direction), once."""
        if self._closed:
            raise MediaError("media session is closed")
        if self._srtp is not None:
            raise MediaError("SRTP keys are already set")
        self._srtp = SrtpContext(tx, rx)
        self._srtp_counters = self._srtp.counters  # outlives the context, for stats()
        self._keys_set.set()

    def start(self) -> None:
        """Begin sending and playing out (as soon as ICE and the keys are ready)."""
        if self._closed:
            raise MediaError("media session is closed")
        if self._started:
            return
        self._started = True
        self._started_at = asyncio.get_running_loop().time()
        self._spawn(self._run_media(), "media")

    @property
    def first_audio_at(self) -> float | None:
        """Loop time at which the first decoded frame went to the sink."""
        return self._receiver.first_audio_at if self._receiver else None

    def stats(self) -> MediaStats:
        c, r, k = self._c, self._receiver, self._srtp_counters
        fraction = self._sender.remote_fraction_lost
        return MediaStats(
            ice_connected=self._connected.is_set() and not (self._closed or self._ice_lost),
            ice_connect_seconds=self._ice_connect_seconds,
            packets_sent=c.packets_sent,
            bytes_sent=c.bytes_sent,
            rtp_packets_sent=c.rtp_sent,
            rtcp_packets_sent=c.rtcp_sent,
            rtcp_early_reports=c.rtcp_early,
            packets_dropped_by_filter=c.filtered,
            send_errors=c.send_errors,
            packets_received=c.packets_received,
            bytes_received=c.bytes_received,
            rtp_packets_received=c.rtp_received,
            rtcp_packets_received=c.rtcp_received,
            dropped_before_keys=c.before_keys,
            auth_failures=k.auth_failures,
            replays=k.replays,
            malformed=k.malformed,
            rejected_rtp=r.rejected_rtp if r else 0,
            srtp_packet_sizes=tuple(sorted(self._srtp_sizes)),
            srtp_packet_sizes_received=tuple(sorted(self._srtp_sizes_received)),
            opus_payload_sizes=tuple(sorted(self._sender.payload_sizes)),
            encoder_loss_perc=self._sender.loss_perc,
            remote_fraction_lost=None if fraction is None else fraction / 256.0,
            packets_lost=r.reception.lost if r else 0,
            interarrival_jitter_ms=1000.0 * r.reception.jitter_seconds if r else 0.0,
            rtt_seconds=self._rtt,
            playout=PlayoutCounters(**vars(r.playout)) if r else PlayoutCounters(),
            jitter=dataclasses.replace(r.jitter_buffer.stats) if r else None,
            sender_ticks_skipped=self._sender.ticks_skipped,
            encoder_complexity=self._encoder.complexity,
            decoder_complexity=self._decoder.complexity if self._decoder else 0,
            started_at=self._started_at,
            first_audio_at=self.first_audio_at,
            error=self._error,
        )

    async def close(self) -> None:
        """Stop everything; idempotent. Keys are dropped (best effort, see voice.media.srtp)."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._connection.close()
        if self._srtp is not None:
            self._srtp.close()
            self._srtp = None
        for closer in (self._source.close, self._sink.close):
            try:
                await closer()
            except Exception:  # closing must not fail half-way
                logger.exception("closing an audio endpoint failed")
        self._encoder.close()
        if self._decoder is not None:
            self._decoder.close()

    # internals

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"media-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._error is None:
            self._error = f"{task.get_name()}: {type(exc).__name__}: {exc}"
            logger.error("media task %s stopped: %s", task.get_name(), type(exc).__name__)

    async def _run_media(self) -> None:
        await self._connected.wait()
        await self._keys_set.wait()
        assert self._receiver is not None
        clock = MediaClock.for_loop()
        self._spawn(self._sender.run_clocked(clock), "send")
        self._spawn(self._receiver.run(clock), "playout")
        self._spawn(self._rtcp_loop(), "rtcp")

    async def _transmit(self, data: bytes) -> None:
        if self._on_datagram_sent is not None:
            self._on_datagram_sent(data)
        try:
            await self._connection.send(data)
        except ConnectionError:
            self._c.send_errors += 1
            return
        self._c.packets_sent += 1
        self._c.bytes_sent += len(data)

    async def _send_rtp(self, packet: bytes) -> None:
        if self._srtp is None or self._closed:
            return
        data = self._srtp.protect(packet)
        self._srtp_sizes.add(len(data))
        if self._send_filter is not None and not self._send_filter(data):
            self._c.filtered += 1
            return
        self._c.rtp_sent += 1
        await self._transmit(data)

    async def _rtcp_loop(self) -> None:
        """A regular report every 0.75-1.25 s, plus at most one early report per interval.

        The early one goes out when a loss follows a report that claimed a clean link, and only
        if that loss is still there when the task runs (a reordered packet may have filled the
        gap): so neither reordering nor a peer can make us report more than twice per interval.
        """
        loop = asyncio.get_running_loop()
        while True:
            deadline = loop.time() + RTCP_INTERVAL * self._rng.uniform(0.75, 1.25)
            if await self._loss_before(deadline):
                self._c.rtcp_early += 1
                if not await self._send_report(loop.time()):
                    return
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if not await self._send_report(loop.time()):
                return

    async def _loss_before(self, deadline: float) -> bool:
        """Wait until ``deadline``; True at once if an unreported loss shows up before it."""
        assert self._receiver is not None
        loop = asyncio.get_running_loop()
        noticed, reception = self._receiver.loss_noticed, self._receiver.reception
        while True:
            noticed.clear()
            if reception.loss_unreported:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(noticed.wait(), remaining)

    async def _send_report(self, now: float) -> bool:
        """One SR or RR; False once the session has no SRTP context any more."""
        assert self._receiver is not None
        block = self._receiver.report_block(now)
        blocks = [block] if block is not None else []
        report = self._sender.sender_report(now, blocks)
        if report is None and not blocks:
            return True
        packet = bytes(report) if report else bytes(RtcpRrPacket(self.ssrc, blocks))
        if self._srtp is None:
            return False
        self._c.rtcp_sent += 1
        await self._transmit(self._srtp.protect_rtcp(packet))
        return True

    def _on_report_block(self, block: RtcpReceiverInfo) -> None:
        if block.ssrc != self.ssrc:
            return
        self._sender.on_report_block(block)
        rtt = round_trip_seconds(block, time.time())
        if rtt is not None:
            self._rtt = rtt

    async def _recv_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._receiver is not None
        receiver = self._receiver
        while True:
            try:
                data = await self._connection.recv()
            except ConnectionError:
                if not self._closed:  # aioice closed itself: consent expired (RFC 7675)
                    self._ice_lost = True
                    self._error = self._error or "ICE connection lost: the peer stopped answering"
                    logger.warning("media: ICE connection lost")
                return
            arrival = loop.time()
            self._c.packets_received += 1
            self._c.bytes_received += len(data)
            if not is_rtp_or_rtcp(data):
                continue
            srtp = self._srtp
            if srtp is None:
                self._c.before_keys += 1
                continue
            if is_rtcp(data):
                plain = srtp.unprotect_rtcp(data)
                if plain is not None:
                    self._c.rtcp_received += 1
                    receiver.on_rtcp(plain, arrival)
            else:
                plain = srtp.unprotect(data)
                if plain is not None:
                    self._c.rtp_received += 1
                    self._srtp_sizes_received.add(len(data))
                    receiver.on_rtp(plain, arrival)
