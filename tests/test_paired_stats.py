"""Paired bootstrap statistics: pairing, widths, coverage, gap closed, several classifiers, seeds, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stainshift.paired_stats import GapInterval, Interval, PairedBootstrap


def overlap(x: Interval, y: Interval) -> bool:
    return x.low <= y.high and y.low <= x.high


def test_verdict_follows_the_interval_strictly() -> None:
    assert Interval(0.1, 0.01, 0.2).verdict() == "better"
    assert Interval(-0.1, -0.2, -0.01).verdict() == "worse"
    assert Interval(0.1, 0.0, 0.2).verdict() == "n.s."  # touching 0 is not better
    assert Interval(-0.1, -0.2, 0.0).verdict() == "n.s."
    assert Interval(math.nan, math.nan, math.nan).verdict() == "n.s."
    assert Interval(0.1, 0.01, 0.2).excludes_zero and not Interval(0.0, -0.1, 0.1).excludes_zero


def test_pairing_detects_a_consistent_difference_that_unpaired_intervals_miss() -> None:
    n = 200
    b = np.zeros(n, bool)
    b[:100] = True                      # 50% correct
    a = b.copy()
    a[100:112] = True                   # a fixes 12 images b gets wrong, and breaks none: 56%
    boot = PairedBootstrap(n, n_boot=2000, seed=0)
    diff = boot.difference(a, b)
    assert diff.value == pytest.approx(0.06)
    assert diff.low > 0 and diff.verdict() == "better"
    assert boot.difference(b, a).verdict() == "worse"
    # the same comparison, unpaired: each accuracy's own interval (about +-0.07) overlaps the other's, and
    # independent resamples of a and b give a difference interval of about +-0.10, which includes 0
    assert overlap(boot.accuracy(a), boot.accuracy(b))
    other = PairedBootstrap(n, n_boot=2000, seed=1)
    unpaired = a[boot.indices].mean(axis=1) - b[other.indices].mean(axis=1)
    assert np.quantile(unpaired, 0.025) < 0 < np.quantile(unpaired, 0.975)


def test_pairing_with_disagreements_both_ways() -> None:
    # 30 of 200 images differ: 25 in favour of a, 5 in favour of b (net +10 points)
    n = 200
    b = np.zeros(n, bool)
    b[:95] = True
    b[95:100] = True                    # the 5 that b gets and a misses
    a = b.copy()
    a[95:100] = False
    a[100:125] = True
    boot = PairedBootstrap(n, seed=1)
    diff = boot.difference(a, b)
    assert diff.value == pytest.approx(20 / 200)
    assert diff.verdict() == "better"
    assert overlap(boot.accuracy(a), boot.accuracy(b))


def test_identical_vectors_give_an_exact_zero_difference() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(150) < 0.7
    diff = PairedBootstrap(150, seed=0).difference(a, a.copy())
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert diff.verdict() == "n.s."


def test_accuracy_interval_shrinks_as_one_over_sqrt_n() -> None:
    rng = np.random.default_rng(0)
    small = rng.random(100) < 0.7
    large = rng.random(1600) < 0.7
    w_small = PairedBootstrap(100, seed=0).accuracy(small).width
    w_large = PairedBootstrap(1600, seed=0).accuracy(large).width
    assert 3.0 <= w_small / w_large <= 5.0  # sqrt(1600 / 100) = 4


def test_accuracy_interval_is_about_the_binomial_one() -> None:
    correct = np.zeros(400, bool)
    correct[:280] = True  # 0.7
    acc = PairedBootstrap(400, seed=0).accuracy(correct)
    assert acc.value == 0.7
    half = 1.96 * math.sqrt(0.7 * 0.3 / 400)  # 0.045
    assert acc.low == pytest.approx(0.7 - half, abs=0.004)
    assert acc.high == pytest.approx(0.7 + half, abs=0.004)


def test_coverage_of_the_accuracy_interval() -> None:
    rng = np.random.default_rng(42)
    hits = 0
    for i in range(200):
        sample = rng.random(150) < 0.6
        acc = PairedBootstrap(150, n_boot=1000, seed=i).accuracy(sample)
        hits += acc.low <= 0.6 <= acc.high
    assert 0.88 * 200 <= hits <= 0.99 * 200


def test_a_lower_level_gives_a_narrower_interval() -> None:
    correct = np.arange(300) % 3 != 0
    wide = PairedBootstrap(300, seed=0, level=0.95).accuracy(correct)
    narrow = PairedBootstrap(300, seed=0, level=0.5).accuracy(correct)
    assert narrow.width < 0.5 * wide.width and narrow.level == 0.5


def test_gap_closed_with_no_gap_to_close() -> None:
    rng = np.random.default_rng(5)
    original = rng.random(120) < 0.5
    cond = rng.random(120) < 0.6
    gap = PairedBootstrap(120, n_boot=500, seed=0).gap_closed(cond, original, original.copy())
    assert isinstance(gap, GapInterval)
    assert math.isnan(gap.value) and math.isnan(gap.low) and math.isnan(gap.high)
    assert gap.denominator_in_noise
    assert (gap.n_used, gap.n_dropped) == (0, 500)
    assert gap.verdict() == "n.s."


def test_gap_closed_halfway() -> None:
    n = 200
    original = np.zeros(n, bool)
    original[:100] = True              # 0.50
    upper = original.copy()
    upper[100:180] = True              # 0.90
    cond = original.copy()
    cond[100:140] = True               # 0.70: half of the 40-point gap
    gap = PairedBootstrap(n, seed=0).gap_closed(cond, original, upper)
    assert gap.value == 0.5
    assert 0.3 < gap.low < 0.5 < gap.high < 0.7 and gap.excludes_zero
    assert not gap.denominator_in_noise and gap.n_dropped == 0 and gap.n_used == 2000
    assert gap.denominator.value == pytest.approx(0.4) and gap.denominator.low > 0.3


def test_gap_closed_drops_resamples_with_a_zero_denominator() -> None:
    # upper beats original on one image of 50: a resample misses it with probability (49/50)^50 = 0.36
    n = 50
    original = np.zeros(n, bool)
    original[:25] = True
    upper = original.copy()
    upper[25] = True
    gap = PairedBootstrap(n, n_boot=2000, seed=0).gap_closed(upper, original, upper)
    assert gap.value == 1.0 and gap.low == gap.high == 1.0  # where defined, cond = upper closes the whole gap
    assert 0.30 < gap.n_dropped / 2000 < 0.43 and gap.n_used + gap.n_dropped == 2000
    assert gap.denominator_in_noise


def two_classifiers() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classifier 1: 50% -> 70% of the way to 90% (gap 20/40 = 0.5); classifier 2: 80% -> 89% of 90% (9/10 = 0.9)."""
    n = 100
    original, cond, upper = (np.zeros((2, n), bool) for _ in range(3))
    original[0, :50], cond[0, :70], upper[0, :90] = True, True, True
    original[1, :80], cond[1, :89], upper[1, :90] = True, True, True
    return cond, original, upper


def test_ratio_of_means_and_mean_of_gaps_differ() -> None:
    cond, original, upper = two_classifiers()
    boot = PairedBootstrap(100, seed=0)
    ratio = boot.gap_closed(cond, original, upper)
    mean = boot.mean_of_gaps(cond, original, upper)
    # ratio of means: mean gain (20 + 9) / 2 points over mean room (40 + 10) / 2 points = 29 / 50
    assert ratio.value == pytest.approx(0.58)
    # mean of gaps: (0.5 + 0.9) / 2
    assert mean.value == pytest.approx(0.70)
    assert mean.denominator.value == pytest.approx(0.25) == ratio.denominator.value
    # each summary equals the corresponding single-classifier gap when taken one classifier at a time
    assert boot.gap_closed(cond[1], original[1], upper[1]).value == pytest.approx(0.9)
    assert boot.mean_of_gaps(cond[0], original[0], upper[0]).value == pytest.approx(0.5)


def test_mean_of_gaps_flags_one_classifier_with_a_noisy_denominator() -> None:
    cond, original, upper = two_classifiers()
    upper[1, 90:] = False
    upper[1, 80:] = False
    upper[1, 80] = True  # classifier 2's upper bound is one image above its original accuracy
    boot = PairedBootstrap(100, seed=0)
    assert boot.mean_of_gaps(cond, original, upper).denominator_in_noise
    assert boot.mean_of_gaps(cond, original, upper).n_dropped > 0
    ratio = boot.gap_closed(cond, original, upper)  # the pooled denominator, (40 + 1) / 2 points, is solid
    assert not ratio.denominator_in_noise and ratio.n_dropped == 0


def test_two_dimensional_accuracy_is_the_mean_over_classifiers() -> None:
    correct = np.zeros((2, 100), bool)
    correct[0, :50] = True
    correct[1, :80] = True
    boot = PairedBootstrap(100, seed=0)
    assert boot.accuracy(correct).value == pytest.approx(0.65)
    diff = boot.difference(correct, np.zeros((2, 100), bool))
    assert diff.value == pytest.approx(0.65) and diff.verdict() == "better"
    # k identical classifiers summarize to exactly the single classifier, interval included
    row = correct[1]
    assert boot.accuracy(np.stack([row, row, row])) == boot.accuracy(row)


def test_same_seed_same_intervals_other_seed_slightly_different() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.random(300) < 0.7, rng.random(300) < 0.6
    one, same = PairedBootstrap(300, seed=7), PairedBootstrap(300, seed=7)
    other = PairedBootstrap(300, seed=8)
    assert one.difference(a, b) == same.difference(a, b)
    assert one.accuracy(a) == same.accuracy(a)
    x, y = one.difference(a, b), other.difference(a, b)
    assert x.value == y.value  # the full-sample value does not depend on the resamples
    assert (x.low, x.high) != (y.low, y.high)
    assert abs(x.low - y.low) < 0.02 and abs(x.high - y.high) < 0.02


def test_indices_are_shared_and_read_only() -> None:
    boot = PairedBootstrap(40, n_boot=30, seed=0)
    assert boot.indices.shape == (30, 40) and boot.indices.min() >= 0 and boot.indices.max() < 40
    with pytest.raises(ValueError):
        boot.indices[0, 0] = 1


@pytest.mark.parametrize(("call", "match"), [
    (lambda b: b.accuracy(np.ones(9, bool)), "9 images"),
    (lambda b: b.accuracy(np.ones((2, 3, 10), bool)), "expected shape"),
    (lambda b: b.accuracy(np.ones((0, 10), bool)), "empty"),
    (lambda b: b.accuracy(np.full(10, 2)), "booleans"),
    (lambda b: b.difference(np.ones(10, bool), np.ones((2, 10), bool)), "shape mismatch"),
    (lambda b: b.gap_closed(np.ones((2, 10), bool), np.ones((3, 10), bool), np.ones((2, 10), bool)),
     "shape mismatch"),
    (lambda b: b.mean_of_gaps(np.ones(10, bool), np.ones(10, bool), np.ones(11, bool)), "11 images"),
])
def test_bad_inputs_raise_one_line_errors(call, match: str) -> None:
    boot = PairedBootstrap(10, n_boot=20)
    with pytest.raises(ValueError, match=match) as info:
        call(boot)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"n_images": 0}, {"n_images": 10, "n_boot": 0}, {"n_images": 10, "level": 1.0},
                                    {"n_images": 2.5}])
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PairedBootstrap(**kwargs)
