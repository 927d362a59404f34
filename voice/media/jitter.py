"""Adaptive jitter buffer: which Opus packet to decode on each 20 ms playout tick. Pure code.

The receiver :meth:`~JitterBuffer.push`\\ es each received RTP packet with its arrival time (any
monotonic clock, seconds); a steady 20 ms playout clock calls :meth:`~JitterBuffer.pop` once per
tick with the same clock and gets exactly one decision: :class:`Play` a packet, rebuild a lost
frame with :class:`RecoverWithFec` from the FEC data of the next packet, :class:`Conceal` (Opus
PLC), or :class:`Wait` (only before playout starts). After decoding, the receiver reports with
:meth:`~JitterBuffer.note_silence` whether the frame was a pause. Without time-stretching the
buffer changes its depth (drops or inserts a frame) only then, so speech is never chopped. With
``time_stretch=True`` :class:`Play` carries a :class:`Tempo`: the receiver shortens or lengthens
the decoded frame by a pitch period (voice.audio.stretch), so depth changes happen in speech too,
gradually (docs/jitter-buffer.md, "Time-stretching").

How it decides (docs/jitter-buffer.md has the why):

* Timing model. For each packet ``r = arrival - timestamp / clock_rate``; a floor tracker
  follows the smallest ``r`` (rising at most ``floor_rise_ms`` per packet, so it follows clock
  drift) and the *playout delay* of the slot about to be played is
  ``now - timestamp / clock_rate - floor``: how long after its earliest possible arrival we play it.
* Target delay = guard + the 95th percentile of recent lateness above the floor (held, decaying
  with a half-life of 3 s) + one frame while losses are recent (so the successor is there for FEC).
* Underrun (nothing buffered for the slot): conceal *without* advancing; the delay grows by one
  frame. When the stream resumes after a gap, missing slots we are already late for are skipped,
  keeping one for FEC: a single loss costs one concealed frame and one FEC frame, not two PLCs.
* Slot missing but a later packet present: FEC from the successor, else conceal; move on.
* In silence (without time-stretching): insert a concealed frame if the delay is (or, given the
  measured drift, soon will be) below target; drop frames if it is more than a frame above
  target for a while. With it: lengthen frames while below target, shorten them with a frame to
  spare, in speech as in silence (see :meth:`JitterBuffer._stretched`).
* Bounded: at most ``capacity_frames`` ahead; a sequence jump beyond ``max_seq_jump`` (a sender
  restart) resets the buffer instead of concealing thousands of frames.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

_SEQ_MOD: Final = 1 << 16
_TS_MOD: Final = 1 << 32


class Tempo(Enum):
    """How to play a decoded frame when the buffer time-stretches (``time_stretch=True``)."""

    NORMAL = "normal"
    FASTER = "faster"  # shorten it by a pitch period: a whole frame to spare above target
    TRIM = "trim"  # shorten it by a period no longer than the audio pending in the receiver
    SLOWER = "slower"  # lengthen it by a pitch period: the delay is below target


@dataclass(frozen=True)
class Play:
    """Decode this packet (and stretch it as ``tempo`` says: voice.audio.stretch)."""

    payload: bytes
    tempo: Tempo = Tempo.NORMAL


@dataclass(frozen=True)
class RecoverWithFec:
    """The packet for this tick is lost: rebuild it from the FEC data of the next packet.

    The next packet is still buffered and comes as :class:`Play` on the next tick.
    """

    next_payload: bytes


@dataclass(frozen=True)
class Conceal:
    """Nothing to decode: run packet-loss concealment."""


@dataclass(frozen=True)
class Wait:
    """Playout has not started yet (no packet, or still filling to the target delay)."""


Playout = Play | RecoverWithFec | Conceal | Wait


@dataclass
class JitterStats:
    """Counters since creation (they survive resets) and the current state."""

    received: int = 0  # packets accepted into the buffer
    duplicates: int = 0
    late: int = 0  # arrived after their slot was played, concealed or skipped
    lost: int = 0  # slots without a packet (recovered with FEC, concealed or skipped)
    fec_recovered: int = 0
    concealed: int = 0  # Conceal decisions (losses, underruns, inserted frames)
    played: int = 0
    dropped: int = 0  # packets discarded to shrink the delay (silence, overflow)
    inserted: int = 0  # concealed frames inserted in silence to grow the delay
    underruns: int = 0  # ticks with nothing buffered for the slot
    resets: int = 0
    faster: int = 0  # Play decisions asking to shorten the frame (time-stretching)
    trimmed: int = 0  # ... to shorten it by at most the audio pending in the receiver
    slower: int = 0  # ... to lengthen it
    current_depth_frames: int = 0  # newest buffered slot - slot being played + 1
    target_delay_frames: int = 1
    jitter_ms: float = 0.0  # RFC 3550 interarrival jitter
    delay_ms: float = 0.0  # playout delay of the last slot (see module docstring)


@dataclass(frozen=True)
class _Packet:
    ts: int  # extended RTP timestamp
    payload: bytes
    arrival: float


def _unwrap(value: int, reference: int, modulus: int) -> int:
    """The extended number congruent to ``value`` closest to the extended ``reference``."""
    delta = (value - reference) % modulus
    if delta >= modulus // 2:
        delta -= modulus
    return reference + delta


class JitterBuffer:
    """One received stream's packets, waiting for their 20 ms playout tick."""

    def __init__(
        self,
        *,
        frame_ms: int = 20,
        clock_rate: int = 48_000,
        samples_per_frame: int = 960,
        min_delay_frames: int = 1,
        max_delay_frames: int = 10,
        capacity_frames: int = 50,
        guard_ms: float = 2.0,
        jitter_quantile: float = 0.95,
        jitter_window: int = 100,
        hold_half_life_frames: int = 150,
        floor_rise_ms: float = 0.2,
        loss_memory: int = 500,
        fec_margin: bool = True,
        drift_horizon_frames: int = 100,
        max_seq_jump: int = 1_000,
        time_stretch: bool = False,
        min_trim_ms: float = 2.5,
        hysteresis_ms: float = 2.0,
    ) -> None:
        if not 1 <= min_delay_frames <= max_delay_frames <= capacity_frames:
            raise ValueError("need 1 <= min_delay_frames <= max_delay_frames <= capacity_frames")
        self._frame = frame_ms / 1000.0
        self._rate = clock_rate
        self._spf = samples_per_frame
        self._min_ms = (min_delay_frames - 1) * frame_ms
        self._max_ms = (max_delay_frames - 1) * frame_ms
        self._max_frames = max_delay_frames
        self._capacity = capacity_frames
        self._guard_ms = guard_ms
        self._quantile = jitter_quantile
        self._lateness: deque[float] = deque(maxlen=jitter_window)
        self._hold_keep = 0.5 ** (1.0 / hold_half_life_frames)
        self._floor_rise = floor_rise_ms / 1000.0
        self._loss_memory = loss_memory
        self._fec_margin = fec_margin
        self._horizon = drift_horizon_frames
        self._max_jump = max_seq_jump
        self._stretch = time_stretch
        self._min_trim_ms = min_trim_ms
        self._hysteresis_ms = hysteresis_ms
        self.stats = JitterStats()
        self._silent = False
        self._pending_ms = 0.0
        self._reset()

    def _reset(self) -> None:
        self._packets: dict[int, _Packet] = {}
        self._seen: deque[int] = deque(maxlen=4 * self._capacity)
        self._seen_set: set[int] = set()  # the same numbers: membership in O(1), per packet
        self._highest: int | None = None  # extended seq of the newest packet
        self._highest_ts = 0
        self._slot: int | None = None  # extended seq to play next (None: not started)
        self._slot_ts = 0
        self._floor: float | None = None
        self._prev_r: float | None = None
        self._drift = 0.0  # EWMA of the floor's change per packet, seconds
        self._drift_n = 0
        self._lateness.clear()
        self._ranked: list[float] = []  # the same values as _lateness, sorted
        self._hold_ms = 0.0
        self._since_loss = self._loss_memory  # packets since the last loss
        self._recent_delays: deque[float] = deque(maxlen=10)

    # -- input ---------------------------------------------------------------------------------

    def push(self, *, seq: int, timestamp: int, payload: bytes, arrival: float) -> None:
        """One received packet (16-bit ``seq``, 32-bit RTP ``timestamp``)."""
        seq &= 0xFFFF
        timestamp &= 0xFFFF_FFFF
        if self._highest is None:
            ext, ext_ts = seq, timestamp
        else:
            ext = _unwrap(seq, self._highest, _SEQ_MOD)
            ext_ts = _unwrap(timestamp, self._highest_ts, _TS_MOD)
            jump = ext - self._highest
            if (
                abs(jump) > self._max_jump
                or abs(ext_ts - self._highest_ts) > (abs(jump) + self._max_jump) * self._spf
            ):
                self.stats.resets += 1
                self._reset()
                ext, ext_ts = seq, timestamp
        if ext in self._seen_set:
            self.stats.duplicates += 1
            return
        if len(self._seen) == self._seen.maxlen:  # the oldest number leaves the window
            self._seen_set.discard(self._seen[0])
        self._seen.append(ext)
        self._seen_set.add(ext)
        self._observe(ext_ts, arrival)  # late packets are the best evidence of jitter
        if self._slot is not None and ext < self._slot:
            self.stats.late += 1
            return
        self.stats.received += 1
        self._packets[ext] = _Packet(ext_ts, bytes(payload), arrival)
        if self._highest is None or ext > self._highest:
            self._highest, self._highest_ts = ext, ext_ts
        while len(self._packets) > self._capacity:  # only if pop() is not being called
            del self._packets[min(self._packets)]
            self.stats.dropped += 1

    def _observe(self, ts: int, arrival: float) -> None:
        """Update the floor, drift, lateness and RFC 3550 jitter with one arrival."""
        r = arrival - ts / self._rate
        if self._prev_r is not None:
            d_ms = abs(r - self._prev_r) * 1000.0
            self.stats.jitter_ms += (d_ms - self.stats.jitter_ms) / 16.0
        self._prev_r = r
        if self._floor is None:
            self._floor = r
        else:
            old = self._floor
            self._floor = min(r, self._floor + self._floor_rise)
            self._drift_n = min(self._drift_n + 1, 256)  # running mean first, then EWMA
            self._drift += (self._floor - old - self._drift) / self._drift_n
        lateness = (r - self._floor) * 1000.0
        ranked = self._ranked
        if len(self._lateness) == self._lateness.maxlen:  # the oldest value leaves the window
            del ranked[bisect.bisect_left(ranked, self._lateness[0])]
        self._lateness.append(lateness)
        bisect.insort(ranked, lateness)
        spread = ranked[min(len(ranked) - 1, int(self._quantile * len(ranked)))]
        self._hold_ms = min(self._max_ms, max(spread, self._hold_ms * self._hold_keep))
        self._since_loss += 1

    def note_silence(self, silent: bool) -> None:
        """Whether the frame just decoded was a pause: only then may the depth change."""
        self._silent = silent

    # -- output --------------------------------------------------------------------------------

    @property
    def target_ms(self) -> float:
        """Wanted playout delay above the arrival floor, in milliseconds."""
        loss = (
            self._frame * 1000.0 if self._fec_margin and self._since_loss < self._loss_memory else 0
        )
        wanted = self._guard_ms + self._hold_ms + loss
        return min(self._max_ms + self._guard_ms, max(self._min_ms, wanted))

    def pop(self, now: float, pending_ms: float = 0.0) -> Playout:
        """The decision for the playout tick at ``now`` (call once per tick; a time-stretching
        receiver calls again in the same tick when a shortened frame left less than a frame).

        ``pending_ms``: decoded audio still waiting in the receiver, to be played before the
        slot's (a stretched frame leaves part of a frame over); it adds to the slot's delay.
        """
        self._pending_ms = pending_ms
        decision = self._decide(now)
        st = self.stats
        st.target_delay_frames = min(
            self._max_frames, 1 + int(self.target_ms // (self._frame * 1000))
        )
        st.current_depth_frames = 0
        if self._slot is not None and self._highest is not None:
            st.current_depth_frames = max(0, self._highest - self._slot + 1)
        return decision

    def _delay_ms(self, now: float) -> float:
        assert self._floor is not None and self._slot is not None
        packet = self._packets.get(self._slot)
        ts = packet.ts if packet is not None else self._slot_ts
        return (now - ts / self._rate - self._floor) * 1000.0

    def _decide(self, now: float) -> Playout:
        if self._slot is None:
            if not self._packets:
                return Wait()
            self._slot = min(self._packets)
            self._slot_ts = self._packets[self._slot].ts
            if self._delay_ms(now) < self.target_ms:
                self._slot = None
                return Wait()
        slot = self._slot
        # Overflow: never more than `capacity` frames ahead of playout.
        if self._highest is not None and self._highest - slot + 1 > self._capacity:
            self._skip(self._highest - self._capacity + 1 - slot, dropped=True)
        delay = self._delay_ms(now)  # the slot's decode margin: what protects it from lateness
        self.stats.delay_ms = delay + self._pending_ms  # ... plus what plays before it
        self._recent_delays.append(delay)
        target = self.target_ms
        frame_ms = self._frame * 1000.0
        run = self._run_length()
        if run == 0 and self._packets:  # a gap: skip missing slots we are already late for
            first = min(self._packets)
            skip = min(first - self._slot - 1, int((delay - target) // frame_ms))
            if skip > 0:
                self._skip(skip, dropped=False)
                delay -= skip * frame_ms
        elif run > 0 and self._stretch:
            return self._stretched(delay, target, run)
        elif run > 0 and self._silent:
            # A rising floor (sender clock slower than ours) lowers the delay frame by frame:
            # act on where it will be `horizon` frames from now, while we are still silent.
            # Trust the slope only after `horizon` packets: early on, the sender's scheduling
            # jitter looks like a rising floor and would insert frames for nothing.
            trusted = self._drift_n >= self._horizon
            falling = max(0.0, self._drift * 1000.0 * self._horizon) if trusted else 0.0
            if delay - falling < target:
                self.stats.inserted += 1
                return self._conceal(advance=False)
            excess = min(self._recent_delays) - target - falling - self._guard_ms
            drop = min(run - 1, int(excess // frame_ms))
            if drop > 0:
                self._skip(drop, dropped=True)
        elif run > 1 and delay >= max(target, self._max_ms) + 2 * frame_ms:
            self._skip(1, dropped=True)  # hard limit, even in speech
        return self._next()

    def _stretched(self, margin: float, target: float, run: int) -> Playout:
        """Time-stretching (docs/jitter-buffer.md): depth changes a pitch period per frame, in
        pauses when they can wait for one, in speech when they cannot.

        The receiver decodes a frame when less than a frame of audio is pending, so a slot's
        *margin* (how long after its earliest arrival it is decoded) moves in whole frames;
        the audio pending in the receiver (under a frame) only adds latency. Below target,
        lengthen frames until the pending audio makes up a frame (the margin grows by one);
        with a whole frame to spare, shorten one (the margin falls by a frame and most of a
        frame is pending); then trim the pending audio away, period by period.

        Speech is stretched only when waiting for a pause would hurt: the margin is eaten into
        by more than half the guard (a slow sender clock is about to starve the buffer), or two
        whole frames are to spare (after a burst or an outage). A smaller excess waits for a
        pause: a stretch mid-word is inaudible to most ears, but not free (PESQ-WB loses up to
        0.4 for one), and a pause costs nothing."""
        frame_ms = self._frame * 1000.0
        silent = self._silent
        # Above target by this much for 10 ticks (a momentary spike does not count).
        spare = min(self._recent_delays) - target - self._hysteresis_ms
        if run > 1 and silent and spare >= 2 * frame_ms:
            drop = min(run - 1, int(spare // frame_ms) - 1)  # the last frame goes gradually
            self._skip(drop, dropped=True)
            margin, spare, run = margin - drop * frame_ms, spare - drop * frame_ms, run - drop
        elif run > 1 and margin >= max(target, self._max_ms) + 2 * frame_ms:
            self._skip(1, dropped=True)  # hard limit
            margin, spare, run = margin - frame_ms, spare - frame_ms, run - 1
        decision = self._next()
        if not isinstance(decision, Play):
            return decision
        tempo = Tempo.NORMAL
        if margin < target and (silent or margin < target - self._guard_ms / 2):
            tempo = Tempo.SLOWER
            self.stats.slower += 1
        elif silent and self._pending_ms >= self._min_trim_ms:
            tempo = Tempo.TRIM
            self.stats.trimmed += 1
        elif run > 1 and spare >= (1 if silent else 2) * frame_ms:  # the next slot is here
            tempo = Tempo.FASTER
            self.stats.faster += 1
        return Play(decision.payload, tempo) if tempo is not Tempo.NORMAL else decision

    def _run_length(self) -> int:
        """How many consecutive packets are buffered starting at the slot."""
        assert self._slot is not None
        n = 0
        while self._slot + n in self._packets:
            n += 1
        return n

    def _skip(self, n: int, *, dropped: bool) -> None:
        """Move the slot ``n`` frames ahead without playing them."""
        assert self._slot is not None
        for _ in range(n):
            if self._packets.pop(self._slot, None) is None:
                self.stats.lost += 1
                self._since_loss = 0
            elif dropped:
                self.stats.dropped += 1
            self._slot += 1
            self._slot_ts += self._spf
        self._recent_delays.clear()

    def _next(self) -> Playout:
        assert self._slot is not None
        packet = self._packets.pop(self._slot, None)
        if packet is not None:
            self.stats.played += 1
            self._slot += 1
            self._slot_ts = packet.ts + self._spf
            return Play(packet.payload)
        if not self._packets:
            self.stats.underruns += 1
            return self._conceal(advance=False)
        self.stats.lost += 1
        self._since_loss = 0
        successor = self._packets.get(self._slot + 1)
        if successor is not None:
            self.stats.fec_recovered += 1
            self._slot += 1
            self._slot_ts += self._spf
            return RecoverWithFec(successor.payload)
        return self._conceal(advance=True)

    def _conceal(self, *, advance: bool) -> Conceal:
        assert self._slot is not None
        self.stats.concealed += 1
        if advance:
            self._slot += 1
            self._slot_ts += self._spf
        else:
            self._recent_delays.clear()
        return Conceal()
