"""CPU-aware Opus complexity: step the encoders down when the process falls behind. Pure code.

Like WebRTC's overuse detector, we watch how much of each 20 ms tick the encoders use and how
late the media clock wakes up, and trade codec quality for CPU before the audio breaks up:
complexity 9 costs about 0.9 ms per frame here, 7 0.66 ms, 5 0.45 ms, 1 0.2 ms
(docs/media.md, "Scaling"). One governor serves every encoder of the process (they share the
CPU), so all sessions move together.

Per tick the clock reports ``observe(frames, busy_seconds, late_seconds)``: how many frames
were encoded, how long the codec workers were busy with them (wall time) and how late the tick
fired. The *usage* is ``busy / (period * workers)``, smoothed. The governor

* steps **down** one level when the smoothed usage exceeds ``high`` or when at least
  ``late_count`` of the last ``late_window`` ticks fired more than ``late_limit`` late, at most
  once per ``down_hold`` ticks (so the measure can settle on the new level);
* steps **up** one level when the usage *predicted* at the next level (from the per-frame cost
  measured there before, or the typical cost ratio) stays below ``low``, no tick was late in the
  window, and nothing changed for ``up_hold`` ticks (about 3 s: recovery is slow on purpose, so
  the level does not oscillate).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

# PESQ-WB of the speech sample, lossless, 32 kbit/s: 9: 4.35, 7: 4.25, 5: 4.16, 3: 3.45, 1: 3.39.
# 3 costs nearly twice what 1 costs for about the same quality, so the ladder skips it.
LEVELS: tuple[int, ...] = (9, 7, 5, 1)
# Typical encode cost per frame relative to complexity 9 (libopus 1.3.1, speech, 32 kbit/s).
COST_RATIO: dict[int, float] = {10: 1.0, 9: 1.0, 8: 1.0, 7: 0.72, 6: 0.69, 5: 0.5, 4: 0.5,
                                3: 0.42, 2: 0.4, 1: 0.22, 0: 0.22}  # fmt: skip

# Decoders enhance speech (libopus 1.5+: LACE, deep PLC; +0.1-0.2 PESQ-WB under loss, ~35 µs per
# frame on the event loop thread, ~0.5 ms per concealed frame) only while the encoders run at
# this level or above: under load the decoders step down with them.
ENHANCE_FROM_LEVEL: Final = 5


def decoder_complexity(level: int, best: int) -> int:
    """The decoder complexity to use while the governor allows encoder complexity ``level``."""
    return best if level >= ENHANCE_FROM_LEVEL else 0


@dataclass(frozen=True)
class GovernorState:
    """What the governor decided and why (exposed in MediaStats and the benchmark)."""

    complexity: int
    usage: float  # smoothed codec busy share of the tick budget (0..1+)
    steps_down: int
    steps_up: int


class ComplexityGovernor:
    """Chooses the process-wide Opus complexity from per-tick load observations."""

    def __init__(
        self,
        *,
        levels: tuple[int, ...] = LEVELS,
        period: float = 0.02,
        workers: int = 1,
        high: float = 0.7,
        low: float = 0.45,
        late_limit: float = 0.005,
        late_window: int = 50,
        late_count: int = 3,
        down_hold: int = 10,
        up_hold: int = 150,
        smoothing: float = 0.1,
    ) -> None:
        if not levels or list(levels) != sorted(levels, reverse=True):
            raise ValueError("levels must be a non-empty, descending tuple of complexities")
        if not 0.0 < low < high:
            raise ValueError("need 0 < low < high")
        self._levels = levels
        self._index = 0
        self._budget = period * workers
        self._high, self._low = high, low
        self._late_limit = late_limit
        self._late: deque[bool] = deque(maxlen=late_window)
        self._late_count = late_count
        self._down_hold, self._up_hold = down_hold, up_hold
        self._alpha = smoothing
        self._usage = 0.0
        self._frames = 0.0  # smoothed frames per tick
        self._cost: dict[int, float] = {}  # measured seconds per frame, per level
        self._since_change = 0
        self.steps_down = 0
        self.steps_up = 0

    @property
    def complexity(self) -> int:
        """The complexity every encoder should use now (capped by its own setting)."""
        return self._levels[self._index]

    @property
    def state(self) -> GovernorState:
        return GovernorState(self.complexity, self._usage, self.steps_down, self.steps_up)

    def observe(self, frames: int, busy_seconds: float, late_seconds: float) -> int:
        """One tick's load; returns the complexity to use from now on."""
        self._late.append(late_seconds > self._late_limit)
        self._since_change += 1
        a = self._alpha
        self._usage += a * (busy_seconds / self._budget - self._usage)
        self._frames += a * (frames - self._frames)
        if frames > 0:
            level = self.complexity
            per_frame = busy_seconds / frames
            old = self._cost.get(level)
            self._cost[level] = per_frame if old is None else old + a * (per_frame - old)
        late = sum(self._late)
        can_down = self._index + 1 < len(self._levels) and self._since_change >= self._down_hold
        if can_down and (self._usage > self._high or late >= self._late_count):
            self._step(+1)
            self.steps_down += 1
            return self.complexity
        can_up = self._index > 0 and self._since_change >= self._up_hold and late == 0
        if can_up and self._predicted(self._levels[self._index - 1]) < self._low:
            self._step(-1)
            self.steps_up += 1
        return self.complexity

    def _predicted(self, level: int) -> float:
        """Usage expected at ``level`` with the current number of frames per tick."""
        cost = self._cost.get(level)
        if cost is None:
            here = self._cost.get(self.complexity)
            if here is None:
                return self._usage
            cost = here * COST_RATIO.get(level, 1.0) / COST_RATIO.get(self.complexity, 1.0)
        return self._frames * cost / self._budget

    def _step(self, direction: int) -> None:
        self._index += direction
        self._since_change = 0
        self._late.clear()
        # The smoothed usage belongs to the old level: rescale it to the new one's cost.
        old, new = self._levels[self._index - direction], self._levels[self._index]
        self._usage *= COST_RATIO.get(new, 1.0) / COST_RATIO.get(old, 1.0)
