"""The bitrate ladder: which constant bitrate to send at, from the peer's RTCP loss reports only.

Why a ladder (docs/media.md, "Bitrate ladder"): Opus's in-band FEC takes its bits from the
primary encoding, so at 32 kbit/s a lossy link caps PESQ-WB at about 3.3 (5 % loss) and 2.9
(10 %). More bits buy the FEC back. A clean link needs fewer, but not 32 kbit/s either: that
scores 4.28 on clean speech in a call, below the 4.3 target, where 40 kbit/s scores 4.45
offline and 4.4 in calls. Each step is hard CBR:
the bitrate may follow the network, never the speech, so packet sizes say nothing about what
is said; they change only when a loss report moves the step.

Sans-I/O: :class:`BitrateLadder` sees ``(fraction_lost, now)`` pairs and answers the step; the
sender (``voice.media.sender``) applies it to the encoder. The rule:

* a smoothed loss estimate (an even blend of the previous estimate and each report, as the FEC
  tuning does: reports come about once a second and are noisy);
* up at once, as far as the estimate asks (loss hurts now, and the first lossy report is what
  arms FEC, which at the clean step's bitrate would starve the primary encoding);
* down one step at a time, only after the estimate stayed below half the current step's
  threshold (hysteresis) for ``hold_s`` seconds since it last was not, or since the last change
  (minimum hold): slow, so that a link that loses in bursts does not flap.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Step:
    """One rung: its bitrate, and the smoothed loss (percent) at or above which it is taken."""

    bitrate: int
    up_at: float


# Measured offline (bench/ladder_offline.py, docs/media.md "Bitrate ladder"): every higher step
# gains at every loss rate, so the thresholds trade bandwidth for the targets (PESQ-WB 4.3
# clean, 3.6 at 5 % random loss, 3.2 at 10 % and under bursts). Step 0 is the clean link
# (40 kbit/s: 32 scores 4.28 on clean speech), step 1 is "any loss" (it is where FEC gets armed,
# which costs a clean frame 0.2 at 48 kbit/s and 0.3 at 40), 64 kbit/s is for 4 % and bursts.
STEPS: Final = (
    Step(40_000, 0.0),
    Step(48_000, 0.1),
    Step(64_000, 4.0),
)
HOLD_S: Final = 10.0  # seconds clean (below the hysteresis line) before each step down
HYSTERESIS: Final = 0.5  # step down below this share of the current step's ``up_at``


def ladder_for(base_bitrate: int) -> BitrateLadder | None:
    """The ladder for a session configured at ``base_bitrate``: :data:`STEPS` when that is its
    bottom (40 kbit/s, the default), else None: a bitrate chosen by hand stays fixed."""
    return BitrateLadder() if base_bitrate == STEPS[0].bitrate else None


def smoothed_loss(previous: float, fraction_lost: int) -> float:
    """The next loss estimate in percent: an even blend with the report (0..255 of 256)."""
    return 0.5 * previous + 0.5 * (100.0 * fraction_lost / 256.0)


class BitrateLadder:
    """Steps between constant bitrates on loss reports; up fast, down slowly."""

    def __init__(
        self, steps: Sequence[Step] = STEPS, *, hold_s: float = HOLD_S, start: int = 0
    ) -> None:
        if not steps:
            raise ValueError("a ladder needs at least one step")
        if any(b.bitrate <= a.bitrate or b.up_at <= a.up_at for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must rise in both bitrate and loss threshold")
        if not 0 <= start < len(steps):
            raise ValueError(f"start step {start} outside 0..{len(steps) - 1}")
        self.steps = tuple(steps)
        self.hold_s = hold_s
        self.step = start
        self.loss = 0.0  # smoothed loss estimate, percent
        self.changes = 0
        self._clean_since: float | None = None  # when the estimate last went below the line

    @property
    def bitrate(self) -> int:
        return self.steps[self.step].bitrate

    def target(self, loss: float) -> int:
        """The highest step whose threshold ``loss`` reaches."""
        return max((i for i, s in enumerate(self.steps) if loss >= s.up_at), default=0)

    def on_report(self, fraction_lost: int, now: float) -> int:
        """Feed one report about our stream (``fraction_lost`` 0..255, ``now`` in seconds on a
        monotonic clock); returns the bitrate to send at from now on."""
        if not 0 <= fraction_lost <= 255:
            raise ValueError(f"fraction_lost {fraction_lost} outside 0..255")
        self.loss = smoothed_loss(self.loss, fraction_lost)
        wanted = self.target(self.loss)
        if wanted > self.step:
            self._move(wanted, now)
        elif self.step > 0 and self._below_line():
            if self._clean_since is None:
                self._clean_since = now
            elif now - self._clean_since >= self.hold_s:
                self._move(self.step - 1, now)
        else:
            self._clean_since = None
        return self.bitrate

    def _move(self, step: int, now: float) -> None:
        self.step = step
        self.changes += 1
        # A step down restarts the hold at once only if the new step is clean as well; either
        # way the next step down is at least ``hold_s`` away (minimum hold).
        self._clean_since = now if step > 0 and self._below_line() else None

    def _below_line(self) -> bool:
        """Whether the estimate is low enough to count towards a step down (hysteresis)."""
        return self.loss < HYSTERESIS * self.steps[self.step].up_at
