"""MediaSession: the audio path of one call, as the call controller drives it.

    create() -> local_description() --(sealed call messages)--> peer
    connect(peer description)        ICE checks; may run while the phone rings
    set_keys(tx=..., rx=...)         SRTP keys from the e2e key agreement (before or after ICE)
    start()                          after accept: send and play out
    set_muted(...), set_playout_muted(...)  mute and hold: silence out / in, same packets
    send_bye()                       hang-up, in band: SRTCP report + BYE (3 times, 20 ms apart)
    close()                          hang-up: cancel every task, close ICE, drop the keys

Events for the call controller: ``first_packet`` (the peer's first RTP packet that passed SRTP
authentication: the media path works both ways), ``first_audio`` (its first frame played) and
``peer_said_bye`` (an authenticated RTCP BYE from the peer's SSRC: it hung up, even if the
signaling server is down).

Nothing is sent before :meth:`start` (and not before ICE and the keys are both ready); packets
that arrive before the keys are set are dropped and counted. Packet flow and the description
format: docs/media.md.

The session composes one object per job, as aiortc's RTCPeerConnection composes its transports,
and owns their tasks (a task that fails is reported in ``stats().error``):

    MediaTransport (voice.media.transport)   ICE, SRTP, datagrams in and out, their counters
    RtpSender      (voice.media.sender)      source -> Opus -> RTP, every 20 ms; reacts to reports
    RtpReceiver    (voice.media.receiver)    RTP -> jitter buffer -> Opus -> sink, every 20 ms
    RtcpScheduler  (voice.media.rtcpsched)   when our SR/RR reports go out

About 380 lines, on purpose: every job above already lives in its own module; what stays is
the lifecycle that orders them (create, connect, restart, start, bye, close) and the one
stats view that reads all their counters, and splitting either would scatter the facade.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from voice.audio.base import AudioSink, AudioSource
from voice.errors import MediaError
from voice.media import ice
from voice.media.clock import MediaClock
from voice.media.description import RemoteDescription, codec_description, parse_description
from voice.media.ice import MediaPath
from voice.media.iceservers import IceServers, StunServer, TurnServer, interface_addresses
from voice.media.jitter import JitterBuffer
from voice.media.ladder import ladder_for
from voice.media.loss import LossModel, as_send_filter
from voice.media.opus import OpusDecoder, OpusEncoder, OpusSettings
from voice.media.receiver import GUARD_MS, PlayoutCounters, RtpReceiver
from voice.media.rtcpsched import RtcpScheduler
from voice.media.sender import RtpSender
from voice.media.stats import MediaStats
from voice.media.transport import MediaTransport

__all__ = [
    "IceServers",
    "LossModel",
    "MediaPath",
    "MediaSession",
    "MediaStats",
    "OpusSettings",
    "StunServer",
    "TurnServer",
]

logger = logging.getLogger(__name__)

BYE_REPEATS = 3  # a BYE is sent this many times (it is not acknowledged: loss is likely)
BYE_SPACING = 0.020  # seconds between the copies


class MediaSession:
    """One call's audio transport; build it with :meth:`create`."""

    def __init__(
        self,
        *,
        transport: MediaTransport,
        source: AudioSource,
        sink: AudioSink,
        opus: OpusSettings,
        ice_timeout: float,
        rng: random.Random,
    ) -> None:
        self._transport = transport
        self._source = source
        self._sink = sink
        self._opus = opus
        self._ice_timeout = ice_timeout
        self._rng = rng
        self.ssrc = secrets.randbits(32)
        self.first_audio = asyncio.Event()
        self.first_packet = asyncio.Event()  # the peer's first authenticated RTP packet
        self.peer_said_bye = asyncio.Event()  # an authenticated RTCP BYE from the peer's SSRC
        self._encoder = OpusEncoder(opus)
        self._sender = RtpSender(
            source=source,
            encoder=self._encoder,
            send_rtp=transport.send_rtp,
            ssrc=self.ssrc,
            initial_seq=secrets.randbits(16),
            initial_timestamp=secrets.randbits(32),
            initial_loss_perc=opus.packet_loss_perc,
            fec_on_demand=True,
            ladder=ladder_for(opus.bitrate),
        )
        self._decoder: OpusDecoder | None = None
        self._receiver: RtpReceiver | None = None
        self._rtcp: RtcpScheduler | None = None
        self._remote: RemoteDescription | None = None
        self._connect_called = False
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._started_at: float | None = None
        self._error: str | None = None
        self._playout_muted = False

    @classmethod
    async def create(
        cls,
        *,
        controlling: bool,
        source: AudioSource,
        sink: AudioSink,
        host_addresses: Sequence[str] | None = ("127.0.0.1",),
        ice_servers: IceServers | None = None,
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

        ``host_addresses``: where host candidates are gathered (None: every usable interface,
        see :func:`voice.media.iceservers.interface_addresses`; loopback only when listed).
        ``ice_servers``: STUN servers (server-reflexive candidates) and TURN servers (a relay
        candidate through each). ``relay_only``: relay candidates only; IceFailed if no TURN
        allocation succeeds.
        """
        if loss is not None and send_filter is not None:
            raise MediaError("give either loss or send_filter, not both")
        if loss is not None:
            send_filter = as_send_filter(loss)
        transport = await MediaTransport.create(
            controlling=controlling,
            host_addresses=(interface_addresses() if host_addresses is None else host_addresses),
            servers=ice_servers,
            relay_only=relay_only,
            send_filter=send_filter,
            on_datagram_sent=on_datagram_sent,
        )
        try:
            return cls(
                transport=transport,
                source=source,
                sink=sink,
                opus=opus,
                ice_timeout=ice_timeout,
                rng=rng or random.Random(),
            )
        except BaseException:
            await transport.close()  # no socket left open behind a failed create()
            raise

    def local_description(self) -> dict[str, Any]:
        """What the peer needs to reach us and decode us (JSON-able; see docs/media.md)."""
        return {
            "ice": self._transport.local_parameters(),
            "ssrc": self.ssrc,
            "codec": codec_description(self._sender.max_bitrate),
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
            jitter=JitterBuffer(time_stretch=True, guard_ms=GUARD_MS),
            remote_ssrc=self._remote.ssrc,
            on_report_block=self._sender.on_report_block,
            first_audio=self.first_audio,
            first_packet=self.first_packet,
            peer_said_bye=self.peer_said_bye,
        )
        self._receiver.muted = self._playout_muted
        self._rtcp = RtcpScheduler(
            sender=self._sender,
            receiver=self._receiver,
            send_rtcp=self._transport.send_rtcp,
            rng=self._rng,
        )
        await self._transport.connect(self._remote, connect_timeout=self._ice_timeout)
        self._spawn(self._receive(), "recv")

    async def prepare_restart(
        self,
        *,
        ice_servers: IceServers | None = None,
        host_addresses: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Gather a new ICE connection for a restart; return its ``ice`` parameters.

        Same controlling role and relay policy; the same host addresses and ICE servers unless
        given (the machine moved to another network; fresher TURN credentials); fresh
        ufrag/pwd. The result has the shape of ``local_description()["ice"]``. A restart
        still pending is closed and replaced.
        """
        if self._closed:
            raise MediaError("media session is closed")
        return await self._transport.prepare_restart(ice_servers, host_addresses)

    async def complete_restart(self, remote_ice: dict[str, Any], *, timeout: float) -> None:  # noqa: ASYNC109
        """Check the peer's restart parameters (BadDescription), run ICE on the prepared
        connection and swap it in (IceFailed: the pending one is closed, the current one stays).

        SRTP, counters and sequence numbers carry on; the receive loop keeps running and the
        old connection is closed.
        """
        if self._closed:
            raise MediaError("media session is closed")
        await self._transport.complete_restart(remote_ice, timeout=timeout)

    def path(self) -> MediaPath | None:
        """The nominated candidate pair (None before ICE connects, once lost or closed)."""
        return self._transport.path()

    def attempted(self) -> str:
        """One line naming the paths ICE tried and what the peer offered (no secrets)."""
        return self._transport.attempted()

    def set_keys(self, *, tx: bytes, rx: bytes) -> None:
        """Install the SRTP keys (44-byte AES-256-GCM key||salt per direction), once."""
        if self._closed:
            raise MediaError("media session is closed")
        self._transport.set_keys(tx=tx, rx=rx)

    def start(self) -> None:
        """Begin sending and playing out (as soon as ICE and the keys are ready)."""
        if self._closed:
            raise MediaError("media session is closed")
        if self._started:
            return
        self._started = True
        self._started_at = asyncio.get_running_loop().time()
        self._spawn(self._run_media(), "media")

    def set_muted(self, muted: bool) -> None:
        """Send digital silence in place of the source's audio (mute, hold), or stop doing so.

        The source is still read; packet sizes and times do not change (constant bitrate), so
        nothing on the path tells a muted call from a talking one."""
        self._sender.muted = muted

    def set_playout_muted(self, muted: bool) -> None:
        """Play silence in place of the peer's audio (hold), or play it again. Packets are
        still received, counted and decoded: the call's health checks see no difference."""
        self._playout_muted = muted
        if self._receiver is not None:
            self._receiver.muted = muted

    @property
    def first_audio_at(self) -> float | None:
        """Loop time at which the first decoded frame went to the sink."""
        return self._receiver.first_audio_at if self._receiver else None

    @property
    def first_packet_at(self) -> float | None:
        """Loop time at which the peer's first authenticated RTP packet arrived."""
        return self._receiver.first_packet_at if self._receiver else None

    async def send_bye(self) -> bool:
        """Say in band that we hang up: a compound SRTCP packet (our report + RTCP BYE with our
        SSRC), sent ``BYE_REPEATS`` times ``BYE_SPACING`` apart. Sends nothing (returns False)
        unless ICE is up and the keys are set; True once a copy went out. Call it before
        :meth:`close`; the peer's ``peer_said_bye`` fires on the first copy it authenticates."""
        loop = asyncio.get_running_loop()
        sent = False
        for copy in range(BYE_REPEATS):
            if copy:
                await asyncio.sleep(BYE_SPACING)
            rtcp, t = self._rtcp, self._transport
            if self._closed or rtcp is None or not (t.keys_set.is_set() and t.ice_connected):
                break  # (re-checked for each copy: close() may have run meanwhile)
            if not await t.send_rtcp(rtcp.goodbye(loop.time())):
                break
            sent = True
        return sent

    def stats(self) -> MediaStats:
        t, r, s = self._transport, self._receiver, self._sender
        c, k = t.counters, t.srtp_counters
        fraction = s.remote_fraction_lost
        return MediaStats(
            ice_connected=t.ice_connected and not self._closed,
            ice_connect_seconds=t.ice_connect_seconds,
            packets_sent=c.packets_sent,
            bytes_sent=c.bytes_sent,
            rtp_packets_sent=c.rtp_sent,
            rtcp_packets_sent=c.rtcp_sent,
            rtcp_early_reports=self._rtcp.early_reports if self._rtcp else 0,
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
            srtp_packet_sizes=tuple(sorted(t.sizes_sent)),
            srtp_packet_sizes_received=tuple(sorted(t.sizes_received)),
            opus_payload_sizes=tuple(sorted(s.payload_sizes)),
            encoder_loss_perc=s.loss_perc,
            remote_fraction_lost=None if fraction is None else fraction / 256.0,
            packets_lost=r.reception.lost if r else 0,
            interarrival_jitter_ms=1000.0 * r.reception.jitter_seconds if r else 0.0,
            rtt_seconds=s.rtt_seconds,
            playout=PlayoutCounters(**vars(r.playout)) if r else PlayoutCounters(),
            jitter=dataclasses.replace(r.jitter_buffer.stats) if r else None,
            sender_ticks_skipped=s.ticks_skipped,
            encoder_complexity=self._encoder.complexity,
            decoder_complexity=self._decoder.complexity if self._decoder else 0,
            started_at=self._started_at,
            first_audio_at=self.first_audio_at,
            first_packet_at=self.first_packet_at,
            last_rtp_at=r.last_rtp_at if r else None,
            error=self._error,
            path=None if (path := t.path()) is None else str(path),
            packets_dropped_no_path=c.dropped_no_path,
            ice_restarts=c.restarts,
            encoder_bitrate=s.bitrate,
        )

    async def close(self) -> None:
        """Stop everything; idempotent. Keys are dropped (best effort, see voice.media.srtp)."""
        if self._closed:
            return
        self._closed = True
        self._transport.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._transport.close()
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
        await self._transport.ready()
        assert self._receiver is not None and self._rtcp is not None
        clock = MediaClock.for_loop()
        self._spawn(self._sender.run_clocked(clock), "send")
        self._spawn(self._receiver.run(clock), "playout")
        self._spawn(self._rtcp.run(), "rtcp")

    async def _receive(self) -> None:
        assert self._receiver is not None
        await self._transport.receive(self._receiver.on_rtp, self._receiver.on_rtcp)
        if self._transport.lost:
            self._error = self._error or "ICE connection lost: the peer stopped answering"
