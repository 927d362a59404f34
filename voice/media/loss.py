"""Packet loss injected in-process on the sender's RTP path, for tests and benchmarks.

Two models, both seeded so a run can be repeated exactly:

* :class:`RandomLoss`: independent (Bernoulli) loss at a fixed rate.
* :class:`GilbertElliott`: two-state Markov loss (good / bad), the usual model of bursty loss on
  real networks. :meth:`GilbertElliott.from_mean` builds one from a mean loss rate and a mean
  burst length, the two numbers people quote.

``MediaSession.create(loss=...)`` drops an RTP packet whenever ``model.drop()`` says so; RTCP is
never dropped (so the peer's reports reflect only the injected audio loss).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class LossModel(Protocol):
    """Decides, packet by packet, whether to drop."""

    def drop(self) -> bool: ...


class RandomLoss:
    """Drop each packet independently with probability ``rate``."""

    def __init__(self, rate: float, *, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"loss rate must be in [0, 1], not {rate}")
        self.rate = rate
        self._rng = random.Random(seed)

    def drop(self) -> bool:
        return self._rng.random() < self.rate


class GilbertElliott:
    """Gilbert-Elliott bursty loss.

    Before each packet the chain moves good->bad with ``p_good_bad`` and bad->good with
    ``p_bad_good``; the packet is then lost with ``loss_good`` or ``loss_bad``. The stationary
    share of bad states is ``p_good_bad / (p_good_bad + p_bad_good)`` and a bad run lasts
    ``1 / p_bad_good`` packets on average.
    """

    def __init__(
        self,
        *,
        p_good_bad: float,
        p_bad_good: float,
        loss_good: float = 0.0,
        loss_bad: float = 1.0,
        seed: int | None = None,
    ) -> None:
        for name, p in (
            ("p_good_bad", p_good_bad),
            ("p_bad_good", p_bad_good),
            ("loss_good", loss_good),
            ("loss_bad", loss_bad),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {p}")
        if p_bad_good == 0.0:
            raise ValueError("p_bad_good must be > 0 or the chain never leaves the bad state")
        self.p_good_bad = p_good_bad
        self.p_bad_good = p_bad_good
        self.loss_good = loss_good
        self.loss_bad = loss_bad
        self.bad = False
        self._rng = random.Random(seed)

    @classmethod
    def from_mean(
        cls, loss_rate: float, mean_burst: float, *, seed: int | None = None
    ) -> GilbertElliott:
        """Bursts of ``mean_burst`` packets (all lost) making up ``loss_rate`` of the stream."""
        if not 0.0 <= loss_rate < 1.0:
            raise ValueError(f"loss rate must be in [0, 1), not {loss_rate}")
        if mean_burst < 1.0:
            raise ValueError(f"mean burst must be >= 1 packet, not {mean_burst}")
        p_bad_good = 1.0 / mean_burst
        p_good_bad = loss_rate * p_bad_good / (1.0 - loss_rate)
        return cls(p_good_bad=min(1.0, p_good_bad), p_bad_good=p_bad_good, seed=seed)

    @property
    def mean_loss(self) -> float:
        """Long-run loss rate of the chain."""
        share_bad = self.p_good_bad / (self.p_good_bad + self.p_bad_good)
        return share_bad * self.loss_bad + (1.0 - share_bad) * self.loss_good

    def drop(self) -> bool:
        if self.bad:
            self.bad = self._rng.random() >= self.p_bad_good
        else:
            self.bad = self._rng.random() < self.p_good_bad
        return self._rng.random() < (self.loss_bad if self.bad else self.loss_good)


def as_send_filter(model: LossModel) -> Callable[[bytes], bool]:
    """A ``send_filter`` (return False to drop) that consults ``model`` once per packet."""

    def keep(_packet: bytes) -> bool:
        return not model.drop()

    return keep
