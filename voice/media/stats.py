"""What a media session reports: :class:`MediaStats`, a frozen snapshot for callers and benches.

Loop times (``started_at``, ``first_audio_at``, ``first_packet_at``, ``last_rtp_at``) come from
the event loop's clock, so the time from one side's ``start()`` to the other side's first audio
is a plain difference when both run in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice.media.jitter import JitterStats
from voice.media.receiver import PlayoutCounters


@dataclass(frozen=True)
class MediaStats:
    """A snapshot of one session's counters (loop times come from ``loop.time()``)."""

    ice_connected: bool
    ice_connect_seconds: float | None  # connect() call to a nominated pair
    packets_sent: int  # datagrams handed to ICE (SRTP + SRTCP)
    bytes_sent: int
    rtp_packets_sent: int
    rtcp_packets_sent: int
    rtcp_early_reports: int  # sent at once because a loss followed a clean report
    packets_dropped_by_filter: int  # RTP packets the loss model / send_filter dropped
    send_errors: int
    packets_received: int  # datagrams from ICE, before any check
    bytes_received: int
    rtp_packets_received: int  # authenticated
    rtcp_packets_received: int  # authenticated
    dropped_before_keys: int
    auth_failures: int
    replays: int
    malformed: int
    rejected_rtp: int  # authenticated but wrong SSRC or payload type
    srtp_packet_sizes: tuple[int, ...]  # distinct sizes of the audio SRTP packets sent
    srtp_packet_sizes_received: tuple[int, ...]  # ... and of the authenticated ones received
    opus_payload_sizes: tuple[int, ...]
    encoder_loss_perc: int
    remote_fraction_lost: float | None  # what the peer last reported about our stream
    packets_lost: int  # of the peer's stream, by sequence numbers
    interarrival_jitter_ms: float
    rtt_seconds: float | None
    playout: PlayoutCounters
    jitter: JitterStats | None
    sender_ticks_skipped: int
    encoder_complexity: int  # Opus complexity in use: lowered while the process is overloaded
    decoder_complexity: int  # 6 = speech enhancement (libopus 1.5+), 0 under load or without it
    started_at: float | None
    first_audio_at: float | None
    first_packet_at: float | None  # arrival of the peer's first authenticated RTP packet
    last_rtp_at: float | None  # ... and of its newest: how long the peer has been quiet
    error: str | None  # why a media task stopped, if one did
    path: str | None = None  # the nominated pair's kind and our leg: "host (udp)", "relay (tls)"
    packets_dropped_no_path: int = 0  # not sent: ICE connection lost, waiting for a restart
    ice_restarts: int = 0
    encoder_bitrate: int = 0  # bit/s now: the bitrate ladder's step (voice/media/ladder.py)
