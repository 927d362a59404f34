"""When our RTCP reports go out: RFC 3550's randomised interval, plus early feedback on loss.

A regular report every ``RTCP_INTERVAL`` +-25 % (RFC 3550 section 6.2: the spread keeps two
peers from reporting in lockstep): an SR while we send (sender info and the report block about
the peer's stream), else an RR. On top of that at most one early report per interval, when a
loss follows a report that told the peer the link was clean (RFC 4585's idea of early
feedback): the peer's sender then arms Opus FEC within a round trip instead of up to 1.25 s
later (``voice.media.sender``).

The scheduler only decides when, and asks the sender and receiver what: the packets come from
:meth:`RtpSender.sender_report <voice.media.sender.RtpSender.sender_report>` and
:meth:`RtpReceiver.report_block <voice.media.receiver.RtpReceiver.report_block>`, and go out
through ``send_rtcp`` (the transport's SRTCP path). The randomness is injected.

:meth:`RtcpScheduler.goodbye` builds the compound packet of a hang-up: a last report (SR or RR,
as RFC 3550 section 6.1 wants every compound to begin) followed by a BYE with our SSRC.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

from aiortc.rtp import RtcpRrPacket

from voice.media.receiver import RtpReceiver
from voice.media.rtcp import bye_packet
from voice.media.sender import RtpSender

__all__ = ["RTCP_INTERVAL", "RtcpScheduler"]

RTCP_INTERVAL = 1.0  # seconds, randomised by +-25 % per report (RFC 3550 section 6.2)


class RtcpScheduler:
    """Sends one call's RTCP reports until cancelled, or until ``send_rtcp`` returns False."""

    def __init__(
        self,
        *,
        sender: RtpSender,
        receiver: RtpReceiver,
        send_rtcp: Callable[[bytes], Awaitable[bool]],
        rng: random.Random,
        interval: float = RTCP_INTERVAL,
    ) -> None:
        self._sender = sender
        self._receiver = receiver
        self._send_rtcp = send_rtcp
        self._rng = rng
        self._interval = interval
        self.early_reports = 0  # sent at once because a loss followed a clean report

    async def run(self) -> None:
        """A regular report every 0.75-1.25 s, plus at most one early report per interval.

        The early one goes out when a loss follows a report that claimed a clean link, and only
        if that loss is still there when the task runs (a reordered packet may have filled the
        gap): so neither reordering nor a peer can make us report more than twice per interval.
        """
        loop = asyncio.get_running_loop()
        while True:
            deadline = loop.time() + self._interval * self._rng.uniform(0.75, 1.25)
            if await self._loss_before(deadline):
                self.early_reports += 1
                if not await self._send_report(loop.time()):
                    return
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if not await self._send_report(loop.time()):
                return

    async def _loss_before(self, deadline: float) -> bool:
        """Wait until ``deadline``; True at once if an unreported loss shows up before it."""
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
        """One SR or RR (nothing before there is anything to say); False once the keys are gone."""
        block = self._receiver.report_block(now)
        blocks = [block] if block is not None else []
        report = self._sender.sender_report(now, blocks)
        if report is None and not blocks:
            return True
        packet = bytes(report) if report else bytes(RtcpRrPacket(self._sender.ssrc, blocks))
        return await self._send_rtcp(packet)

    def goodbye(self, now: float) -> bytes:
        """A compound RTCP packet saying we leave: our SR (or an RR, empty if we received
        nothing) followed by a BYE naming our SSRC (RFC 3550 section 6.6)."""
        block = self._receiver.report_block(now)
        blocks = [block] if block is not None else []
        report = self._sender.sender_report(now, blocks)
        first = bytes(report) if report else bytes(RtcpRrPacket(self._sender.ssrc, blocks))
        return first + bye_packet(self._sender.ssrc)
