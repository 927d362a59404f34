"""voice.media.ladder: which constant bitrate for which loss reports; up fast, down slowly."""

from __future__ import annotations

import itertools
import random

import pytest

from voice.media.ladder import HOLD_S, STEPS, BitrateLadder, Step, ladder_for, smoothed_loss


def fraction(percent: float) -> int:
    """RTCP's fraction_lost (0..255) for a loss percentage."""
    return min(255, round(percent * 256 / 100))


def test_starts_at_the_bottom_and_stays_there_on_a_clean_link() -> None:
    ladder = BitrateLadder()
    assert ladder.bitrate == 40_000
    for t in range(100):
        assert ladder.on_report(0, float(t)) == 40_000
    assert ladder.changes == 0


def test_steps_up_at_once_as_far_as_the_loss_asks() -> None:
    ladder = BitrateLadder()
    assert ladder.on_report(fraction(2), 0.0) == 48_000  # one lost packet in a report: FEC armed
    assert ladder.on_report(fraction(20), 1.0) == 64_000  # a bad report jumps, not one rung
    ladder = BitrateLadder()
    assert ladder.on_report(fraction(9), 0.0) == 64_000  # estimate 4.5 %: straight to the top


def test_every_loss_leaves_the_clean_bottom_step() -> None:
    ladder = BitrateLadder()
    assert ladder.on_report(1, 0.0) == 48_000  # 1/256: the smallest loss RTCP can report


def test_steps_down_one_rung_per_hold_once_clean() -> None:
    ladder = BitrateLadder()
    ladder.on_report(fraction(20), 0.0)
    assert ladder.bitrate == 64_000
    rates: list[tuple[float, int]] = []
    t = 0.0
    while ladder.bitrate > 40_000:
        t += 1.0
        before = ladder.bitrate
        if ladder.on_report(0, t) != before:
            rates.append((t, ladder.bitrate))
        assert t < 100
    assert [r for _, r in rates] == [48_000, 40_000]  # one rung at a time
    times = [0.0] + [when for when, _ in rates]
    assert all(b - a >= HOLD_S for a, b in itertools.pairwise(times))  # held


def test_loss_during_the_hold_restarts_it() -> None:
    ladder = BitrateLadder(hold_s=5.0)
    ladder.on_report(fraction(10), 0.0)  # estimate 5 %: 64k
    for t in range(1, 4):
        ladder.on_report(0, float(t))  # 2.5, 1.25 (below the line from t=2), 0.6
    ladder.on_report(fraction(6), 4.0)  # back above half of 4 %: the hold starts over
    for t in range(5, 9):
        assert ladder.on_report(0, float(t)) == 64_000  # below again from t=5: not before t=10
    assert ladder.on_report(0, 10.0) == 48_000


@pytest.mark.parametrize("rate", [2.0, 5.0, 10.0])
def test_noisy_reports_of_steady_loss_do_not_flap(rate: float) -> None:
    """Per-report loss of a 50 packet/s stream at a steady rate (binomial noise): after the
    first climb the ladder may only go up, never back and forth."""
    rng = random.Random(int(rate * 10))
    ladder = BitrateLadder()
    seen: list[int] = []
    for t in range(300):
        lost = sum(rng.random() < rate / 100 for _ in range(50))
        seen.append(ladder.on_report(min(255, lost * 256 // 50), float(t)))
    downs = sum(1 for a, b in itertools.pairwise(seen) if b < a)
    assert downs <= 2, seen
    assert seen[-1] >= (64_000 if rate >= 5 else 48_000)


def test_hysteresis_keeps_a_step_between_its_lines() -> None:
    ladder = BitrateLadder(hold_s=0.0)
    assert ladder.on_report(fraction(10), 0.0) == 64_000  # estimate 5 %
    ladder.loss = 3.0
    assert ladder.on_report(fraction(3), 1.0) == 64_000  # 3 % < 4 % but above the 2 % line


def test_smoothing_is_an_even_blend() -> None:
    assert smoothed_loss(4.0, 0) == 2.0
    assert smoothed_loss(1.0, 128) == 25.5  # 128/256 = 50 %


def test_ladder_for_a_hand_picked_bitrate_is_none() -> None:
    assert ladder_for(40_000) is not None
    assert ladder_for(32_000) is None


def test_bad_ladders_and_reports_are_refused() -> None:
    with pytest.raises(ValueError):
        BitrateLadder(())
    with pytest.raises(ValueError):
        BitrateLadder((Step(32_000, 0.0), Step(24_000, 1.0)))
    with pytest.raises(ValueError):
        BitrateLadder((Step(32_000, 0.0), Step(40_000, 0.0)))
    with pytest.raises(ValueError):
        BitrateLadder(start=len(STEPS))
    with pytest.raises(ValueError):
        BitrateLadder().on_report(256, 0.0)
