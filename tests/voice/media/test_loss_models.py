"""voice.media.loss: seeded random and Gilbert-Elliott bursty loss."""

from __future__ import annotations

import pytest

from voice.media.loss import GilbertElliott, RandomLoss, as_send_filter

N = 100_000


def runs_of_losses(drops: list[bool]) -> list[int]:
    runs, current = [], 0
    for lost in drops:
        if lost:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_random_loss_rate_and_reproducibility() -> None:
    model = RandomLoss(0.1, seed=7)
    drops = [model.drop() for _ in range(N)]
    assert abs(sum(drops) / N - 0.1) < 0.01
    again = RandomLoss(0.1, seed=7)
    assert [again.drop() for _ in range(N)] == drops
    other = RandomLoss(0.1, seed=8)
    assert [other.drop() for _ in range(N)] != drops
    assert not any(RandomLoss(0.0, seed=1).drop() for _ in range(1000))
    assert all(RandomLoss(1.0, seed=1).drop() for _ in range(1000))


def test_gilbert_elliott_mean_and_bursts() -> None:
    model = GilbertElliott.from_mean(0.1, mean_burst=3.0, seed=3)
    assert model.mean_loss == pytest.approx(0.1)
    drops = [model.drop() for _ in range(N)]
    assert abs(sum(drops) / N - 0.1) < 0.015
    bursty = runs_of_losses(drops)
    assert sum(bursty) / len(bursty) == pytest.approx(3.0, rel=0.15)
    independent_model = RandomLoss(0.1, seed=3)
    independent = runs_of_losses([independent_model.drop() for _ in range(N)])
    assert sum(independent) / len(independent) < 1.2  # what bursts are compared against
    again = GilbertElliott.from_mean(0.1, mean_burst=3.0, seed=3)
    assert [again.drop() for _ in range(N)] == drops


def test_gilbert_elliott_partial_loss_states() -> None:
    model = GilbertElliott(p_good_bad=0.05, p_bad_good=0.5, loss_good=0.01, loss_bad=0.5, seed=1)
    drops = [model.drop() for _ in range(N)]
    assert abs(sum(drops) / N - model.mean_loss) < 0.01


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomLoss(-0.1),
        lambda: RandomLoss(1.5),
        lambda: GilbertElliott(p_good_bad=0.1, p_bad_good=0.0),
        lambda: GilbertElliott(p_good_bad=2.0, p_bad_good=0.5),
        lambda: GilbertElliott.from_mean(1.0, 2.0),
        lambda: GilbertElliott.from_mean(0.1, 0.5),
    ],
)
def test_bad_parameters_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_send_filter_keeps_what_the_model_does_not_drop() -> None:
    keep = as_send_filter(RandomLoss(0.25, seed=5))
    reference = RandomLoss(0.25, seed=5)
    assert [keep(b"x") for _ in range(1000)] == [not reference.drop() for _ in range(1000)]
