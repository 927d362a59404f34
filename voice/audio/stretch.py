"""Time-stretching of decoded speech by whole pitch periods, as WebRTC's NetEq does it. Pure code.

A jitter buffer that must change its delay during speech cannot drop or insert a whole 20 ms
frame without a gap or a stutter. Instead it shortens or lengthens the next decoded frame by one
pitch period (WSOLA: waveform-similarity overlap-add):

* :func:`accelerate` finds the lag ``P`` at which the frame is most like itself one period later
  and replaces its first two periods by one, cross-fading the first into the second. The frame
  loses ``P`` samples; what is left of the waveform is unchanged, so pitch is preserved.
* :func:`expand` cross-fades the second period into a repeat of the first: one period more.

Both keep the first and the last samples of the frame exactly as decoded, so the stretched frame
joins the audio before it and the next decoded frame without a click. A frame that is not
periodic enough (an onset, a fricative: normalised correlation below ``MIN_CORRELATION``) is
left alone, unless it is quiet, where any lag is inaudible; the caller tries again on the next
frame. Lags run from 2.5 ms (400 Hz) to 10 ms (100 Hz): two periods must fit in one 20 ms frame.
The search runs at 12 kHz on a low-passed copy and is refined at full rate, so one attempt costs
about 0.1 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

MIN_LAG_S: Final = 0.0025
MAX_LAG_S: Final = 0.010
MIN_CORRELATION: Final = 0.9  # NetEq's threshold for stretching voiced speech
QUIET_RMS: Final = 300.0  # about -40 dBFS: below this any lag will do (pauses, breath)
_DECIMATE: Final = 4  # search at rate / 4 (12 kHz for 48 kHz audio)


@dataclass(frozen=True)
class Stretch:
    """The outcome of one attempt: the new samples and the period removed or added (0: none)."""

    samples: Int16Array
    period: int


def _best_lag(x: FloatArray, min_lag: int, max_lag: int, window: int) -> tuple[int, float]:
    """The lag in ``[min_lag, max_lag]`` maximising the normalised correlation of
    ``x[:window]`` with ``x[lag:lag + window]``, and that correlation. (A few C-level numpy
    calls: a correlation and a running sum of energies; this runs on the playout tick.)"""
    head = x[:window]
    dots = np.correlate(x[min_lag : max_lag + window], head, mode="valid")
    squares = np.concatenate(([0.0], np.cumsum(x[min_lag : max_lag + window] ** 2)))
    energies = squares[window:] - squares[:-window]
    denominator = np.sqrt(np.maximum(energies, 0.0) * float(head @ head))
    scores = np.where(denominator > 0, dots / np.maximum(denominator, 1e-9), 0.0)
    best = int(np.argmax(scores))
    return min_lag + best, float(scores[best])


def find_period(
    samples: Int16Array, rate: int = 48_000, *, longest: int | None = None
) -> tuple[int, float]:
    """The pitch period (in samples at ``rate``, at most ``longest``) that fits twice into
    ``samples``, and its normalised correlation in [-1, 1]. A coarse search at ``rate / 4`` is
    refined at full rate."""
    x = samples.astype(np.float64)
    min_lag = max(1, round(MIN_LAG_S * rate))
    max_lag = min(round(MAX_LAG_S * rate), len(x) // 2)
    if longest is not None:
        max_lag = min(max_lag, longest)
    if max_lag <= min_lag:
        return 0, 0.0
    window = len(x) - max_lag  # the longest window that every lag can use
    # Coarse: average groups of 4 samples (a crude low-pass that is enough to find the period).
    usable = len(x) - len(x) % _DECIMATE
    coarse = x[:usable].reshape(-1, _DECIMATE).mean(axis=1)
    lag, _ = _best_lag(
        coarse,
        max(1, min_lag // _DECIMATE),
        max_lag // _DECIMATE,
        window // _DECIMATE,
    )
    # Fine: the full-rate lags around the coarse one.
    low = max(min_lag, lag * _DECIMATE - _DECIMATE)
    high = min(max_lag, lag * _DECIMATE + _DECIMATE)
    return _best_lag(x, low, high, window)


def _rms(samples: Int16Array) -> float:
    x = samples.astype(np.float64)
    return float(np.sqrt(x @ x / len(x))) if len(x) else 0.0


def _fade(length: int) -> FloatArray:
    """Gains rising from 0 (included) towards 1 (excluded) over ``length`` samples: the first
    sample of a cross-fade is exactly the fading-out signal's."""
    return np.arange(length, dtype=np.float64) / length


def _period_for(samples: Int16Array, rate: int, longest: int | None) -> int:
    """The period to remove or insert (at most ``longest`` samples), or 0 to leave it alone."""
    limit = min(round(MAX_LAG_S * rate), len(samples) // 2)
    if longest is not None:
        limit = min(limit, longest)
    if limit < round(MIN_LAG_S * rate):
        return 0
    if _rms(samples) < QUIET_RMS:
        return limit  # a pause: any splice is inaudible, so take the most
    period, correlation = find_period(samples, rate, longest=limit)
    return period if correlation >= MIN_CORRELATION else 0


def _to_int16(x: FloatArray) -> Int16Array:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def accelerate(samples: Int16Array, rate: int = 48_000, *, longest: int | None = None) -> Stretch:
    """``samples`` one pitch period (at most ``longest`` samples) shorter, or unchanged with
    period 0 (see the module docstring)."""
    period = _period_for(samples, rate, longest)
    if period == 0:
        return Stretch(samples, 0)
    x = samples.astype(np.float64)
    rising = _fade(period)
    joined = x[:period] * (1.0 - rising) + x[period : 2 * period] * rising
    out = np.concatenate([joined, x[2 * period :]])
    return Stretch(_to_int16(out), period)


def expand(samples: Int16Array, rate: int = 48_000) -> Stretch:
    """``samples`` one pitch period longer (or unchanged, period 0: see the module docstring)."""
    period = _period_for(samples, rate, None)
    if period == 0:
        return Stretch(samples, 0)
    x = samples.astype(np.float64)
    rising = _fade(period)
    # The second period fades into a copy of the first, which then leads on into the second.
    repeat = x[period : 2 * period] * (1.0 - rising) + x[:period] * rising
    out = np.concatenate([x[:period], repeat, x[period:]])
    return Stretch(_to_int16(out), period)
