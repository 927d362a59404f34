"""Pure RTP/RTCP helpers: demultiplexing, reception statistics, report blocks, NTP time.

RTP and RTCP share one ICE component (RFC 5761). A datagram is RTCP when its second byte (the
RTCP packet type, or the RTP marker bit plus payload type) is in 192..223; our RTP payload type
111 never lands there. Packets themselves are built and parsed with ``aiortc.rtp``.

:class:`ReceptionStats` is RFC 3550 appendix A.1/A.3/A.8 arithmetic for one remote source: the
extended highest sequence number, cumulative and interval loss (the ``fraction_lost`` the sender
uses to tune Opus FEC) and interarrival jitter. No I/O and no clock of its own.

:attr:`ReceptionStats.loss_unreported` says when a loss happened since a report that claimed a
clean link: the RTCP scheduler (``voice.media.rtcpsched``) then sends its next report early
(RFC 4585's idea of early feedback), so the peer's sender arms Opus FEC within a round trip
instead of up to 1.25 s later.

:func:`split_compound` walks a (decrypted, authenticated) compound RTCP packet header by header,
bounded; :func:`bye_packet` and :func:`parse_bye` are RTCP BYE (RFC 3550 section 6.6), which the
client sends as an in-band, authenticated hang-up. The parser is strict: anything that breaks
the format raises :class:`MalformedRtcp`.
"""

from __future__ import annotations

import struct

from aiortc.rtp import RtcpReceiverInfo

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100

RTCP_SR = 200
RTCP_RR = 201
RTCP_BYE = 203
MAX_COMPOUND_PARTS = 16  # far more than any compound we or a sane peer send (SR/RR + BYE)
MAX_BYE_REASON = 255  # the reason's length is one octet
_RTCP_HEADER = struct.Struct("!BBH")


class MalformedRtcp(ValueError):
    """A compound RTCP packet, or a BYE inside one, that breaks RFC 3550's format."""


def split_compound(data: bytes) -> list[tuple[int, int, bytes]]:
    """The packets of a compound RTCP packet: (packet type, count field, payload).

    Checked: version 2, 32-bit alignment, each length inside the datagram, padding (the last
    octet counts it, never more than the payload), at most ``MAX_COMPOUND_PARTS`` packets.
    The payload is what follows the 4-byte header, without padding.
    """
    if not data or len(data) % 4:
        raise MalformedRtcp("RTCP is not a non-empty multiple of 32 bits")
    parts: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos < len(data):
        if len(parts) == MAX_COMPOUND_PARTS:
            raise MalformedRtcp("too many packets in one compound RTCP packet")
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise MalformedRtcp("RTCP version is not 2")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise MalformedRtcp("RTCP packet is truncated")
        payload = data[pos + 4 : end]
        if first & 0x20:
            if not payload or not 0 < payload[-1] <= len(payload):
                raise MalformedRtcp("RTCP padding length is invalid")
            payload = payload[: -payload[-1]]
        parts.append((packet_type, first & 0x1F, payload))
        pos = end
    return parts


def bye_packet(ssrc: int, reason: bytes = b"") -> bytes:
    """An RTCP BYE for one source, with an optional reason (at most 255 octets)."""
    if len(reason) > MAX_BYE_REASON:
        raise ValueError("a BYE reason is at most 255 octets")
    body = struct.pack("!I", ssrc & 0xFFFF_FFFF)
    if reason:
        body += bytes([len(reason)]) + reason
        body += bytes(-len(body) % 4)  # null octets to the next 32-bit boundary
    return _RTCP_HEADER.pack(0x80 | 1, RTCP_BYE, len(body) // 4) + body


def parse_bye(count: int, payload: bytes) -> tuple[tuple[int, ...], bytes]:
    """The sources and reason of a BYE, from :func:`split_compound`'s count and payload.

    Strict: ``count`` SSRCs, then either nothing or a reason (length octet, text) followed by
    fewer than four null octets. A count of 0 is valid but names nobody (RFC 3550 6.6).
    """
    if len(payload) < 4 * count:
        raise MalformedRtcp("BYE is shorter than its source count")
    sources = struct.unpack_from(f"!{count}I", payload)
    rest = payload[4 * count :]
    if not rest:
        return sources, b""
    end = 1 + rest[0]
    if end > len(rest):
        raise MalformedRtcp("BYE reason runs past the packet")
    tail = rest[end:]
    if len(tail) >= 4 or any(tail):
        raise MalformedRtcp("BYE has trailing data after its reason")
    return sources, rest[1:end]


def is_rtcp(datagram: bytes) -> bool:
    """RFC 5761 section 4: RTCP packet types 192..223 in the second byte."""
    return len(datagram) >= 2 and 192 <= datagram[1] <= 223


def is_rtp_or_rtcp(datagram: bytes) -> bool:
    """Version 2 in the first two bits (anything else is not ours to read)."""
    return len(datagram) >= 4 and datagram[0] >> 6 == 2


def ntp_time(wallclock: float) -> int:
    """64-bit NTP timestamp (RFC 3550 section 4) for a Unix time in seconds."""
    return int((wallclock + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field of a report block."""
    return (ntp >> 16) & 0xFFFF_FFFF


def round_trip_seconds(report: RtcpReceiverInfo, wallclock: float) -> float | None:
    """RTT from a report block's LSR/DLSR (RFC 3550 section 6.4.1), if it echoes one of ours."""
    if report.lsr == 0:
        return None
    now = ntp_middle32(ntp_time(wallclock))
    rtt = (now - report.lsr - report.dlsr) & 0xFFFF_FFFF
    seconds = rtt / 65536.0
    return seconds if seconds < 60.0 else None


class ReceptionStats:
    """Reception statistics for one remote SSRC (RFC 3550 appendix A)."""

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self._clock_rate = clock_rate
        self.received = 0
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._started = False
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: int | None = None
        self._jitter = 0.0
        self._last_sr: int = 0  # middle 32 bits of the last SR's NTP time
        self._last_sr_at: float | None = None
        self.last_fraction_lost = 0  # in the newest report block we built

    def update(self, seq: int, timestamp: int, arrival: float) -> None:
        """Account for one authenticated RTP packet (``arrival`` in seconds, any epoch)."""
        self.received += 1
        if not self._started:
            self._started = True
            self._base_seq = self._max_seq = seq
        else:
            delta = (seq - self._max_seq) % RTP_SEQ_MOD
            if 0 < delta < MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += RTP_SEQ_MOD
                self._max_seq = seq
            elif delta >= RTP_SEQ_MOD - MAX_MISORDER or delta == 0:
                pass  # duplicate or reordered: counted as received only
            else:  # a big jump: the sender restarted; resynchronise
                self._base_seq = self._max_seq = seq
                self._cycles = 0
                self.received = 1
                self._expected_prior = self._received_prior = 0
        transit = int(arrival * self._clock_rate) - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit

    def note_sender_report(self, ntp: int, arrival: float) -> None:
        """Remember the peer's last SR so our next report lets it measure the round trip."""
        self._last_sr = ntp_middle32(ntp)
        self._last_sr_at = arrival

    @property
    def extended_max_seq(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.extended_max_seq - self._base_seq + 1 if self._started else 0

    @property
    def lost(self) -> int:
        return max(-(1 << 23), min((1 << 23) - 1, self.expected - self.received))

    @property
    def interval_lost(self) -> int:
        """Packets lost since the last report block (negative with duplicates)."""
        expected = self.expected - self._expected_prior
        return expected - (self.received - self._received_prior)

    @property
    def loss_unreported(self) -> bool:
        """A loss since the last report, and that report (if any) claimed a clean link."""
        return self.last_fraction_lost == 0 and self.interval_lost > 0

    @property
    def jitter_seconds(self) -> float:
        return self._jitter / self._clock_rate

    def report_block(self, now: float) -> RtcpReceiverInfo:
        """A report block for an RR; resets the interval used for ``fraction_lost``."""
        expected_interval = self.expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = self.expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        self.last_fraction_lost = fraction
        dlsr = 0
        if self._last_sr_at is not None:
            dlsr = int(max(0.0, now - self._last_sr_at) * 65536) & 0xFFFF_FFFF
        return RtcpReceiverInfo(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=self.lost,
            highest_sequence=self.extended_max_seq & 0xFFFF_FFFF,
            jitter=int(self._jitter) & 0xFFFF_FFFF,
            lsr=self._last_sr,
            dlsr=dlsr,
        )
