"""Band-limited sample-rate conversion and channel mixing in numpy (no scipy here).

A polyphase windowed-sinc resampler: for a rational ratio ``up/down`` the kernel is sampled once
per output phase (``up`` phases), low-pass at the lower of the two Nyquist rates so downsampling
does not alias and upsampling does not image. The kernel is symmetric, so the output has no
delay: sample ``n`` of the output sits at time ``n / rate_out``, which keeps delay measurements on
resampled signals honest.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_ZERO_CROSSINGS = 16  # sinc lobes on each side of the centre, at the lower rate
_ROLLOFF = 0.94  # pass band edge as a fraction of the lower Nyquist rate
_KAISER_BETA = 8.6  # about 80 dB stop-band attenuation
_CHUNK = 8_192  # output samples per vectorised block (bounds memory)


def to_mono(samples: npt.ArrayLike) -> FloatArray:
    """Average the channels of a (frames, channels) array; a 1-D array is already mono."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim == 1:
        return arr
    if arr.ndim != 2:
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {arr.shape}")
    return np.asarray(arr.mean(axis=1), dtype=np.float64)


def resample(samples: npt.ArrayLike, rate_in: int, rate_out: int) -> FloatArray:
    """Convert mono ``samples`` from ``rate_in`` to ``rate_out`` Hz (band-limited, zero delay).

    The output has ``ceil(len * rate_out / rate_in)`` samples.
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample() takes mono samples, got shape {x.shape}")
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if up == down or len(x) == 0:
        return x.copy()
    n_out = (len(x) * up + down - 1) // down
    table, half = _kernel_table(up, down)
    offsets = np.arange(-half + 1, half + 1) + half  # tap positions in the padded input
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out, dtype=np.float64)
    for start in range(0, n_out, _CHUNK):
        n = np.arange(start, min(start + _CHUNK, n_out), dtype=np.int64) * down
        base, phase = np.divmod(n, up)
        taps = padded[base[:, None] + offsets[None, :]]
        out[start : start + len(n)] = np.einsum("ij,ij->i", taps, table[phase])
    return out


def _kernel_table(up: int, down: int) -> tuple[FloatArray, int]:
    """The windowed-sinc kernel sampled for each of the ``up`` output phases.

    Distances are in input samples; the cut-off is ``fc`` times the input Nyquist rate.
    """
    fc = _ROLLOFF * min(1.0, up / down)
    half = math.ceil(_ZERO_CROSSINGS / fc)
    j = np.arange(-half + 1, half + 1, dtype=np.float64)
    frac = np.arange(up, dtype=np.float64)[:, None] / up
    d = j[None, :] - frac  # distance from the output instant to each input tap
    ratio = np.clip(d / half, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    table = fc * np.sinc(fc * d) * window
    table /= table.sum(axis=1, keepdims=True)  # unit DC gain for every phase
    return table, half
