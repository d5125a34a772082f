"""Paired bootstrap statistics for an accuracy-before/after table (pure numpy).

Several classifiers are scored on the same ``n`` test images under many conditions (original images, each
harmonization method, each GAN epoch, a fine-tuned upper bound). For each (classifier, condition) there is a boolean
vector ``correct`` of length ``n``, the images in the same order everywhere.

The statistics are *paired*: one :class:`PairedBootstrap` draws ``n_boot`` resamples of the test images (indices of
shape ``(n_boot, n)``, seeded) and every condition and classifier is evaluated on those same resamples. A difference
between two conditions is then computed resample by resample, so the image-to-image variation that both conditions
share (easy and hard images) cancels: two conditions that differ on a few images, always in the same direction, get a
difference interval that excludes zero even when their separate accuracy intervals overlap widely.

Intervals are percentile intervals over the resamples (``level`` = 0.95: the 2.5th and 97.5th percentiles); the
``value`` of an :class:`Interval` is the statistic on the full sample, not the bootstrap mean.

Several classifiers at once: every method also takes ``(k, n)`` arrays (k classifiers, same images, same row order in
every argument). The statistic is then computed, per resample, on the *mean over the k classifiers of their
accuracies*. For :meth:`PairedBootstrap.gap_closed` that makes the summary a **ratio of means**::

    gap = (mean_k acc_k(cond) - mean_k acc_k(original)) / (mean_k acc_k(upper) - mean_k acc_k(original))

which weights each classifier by how much room it had to improve (a classifier whose upper bound is barely above its
original accuracy barely counts) and stays defined when one classifier's own denominator is zero.
:meth:`PairedBootstrap.mean_of_gaps` gives the other summary, the mean over classifiers of the per-classifier gaps,
which weights classifiers equally but is dominated by any classifier with a small, noisy denominator; report both
when they differ.

    >>> boot = PairedBootstrap(n_images=len(correct_raw), n_boot=2000, seed=0)
    >>> boot.difference(correct_reinhard, correct_raw).verdict()
    'better'
    >>> boot.gap_closed(correct_reinhard, correct_raw, correct_finetuned)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GapInterval", "Interval", "PairedBootstrap"]


@dataclass(frozen=True)
class Interval:
    """A statistic on the full sample (``value``) and its bootstrap percentile interval [``low``, ``high``]."""

    value: float
    low: float
    high: float
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies strictly on one side of 0."""
        return self.low > 0 or self.high < 0

    @property
    def width(self) -> float:
        return self.high - self.low

    def verdict(self) -> str:
        """For a difference a - b: "better" when low > 0, "worse" when high < 0, "n.s." otherwise (NaN included)."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "n.s."

    def summary(self) -> dict[str, float | str]:
        """``value``, ``low``, ``high`` and ``verdict``: the form results files record a difference in."""
        return {"value": self.value, "low": self.low, "high": self.high, "verdict": self.verdict()}


@dataclass(frozen=True, kw_only=True)
class GapInterval(Interval):
    """Fraction of the gap closed, with what it rests on.

    ``denominator`` is the interval of acc(upper) - acc(original) (for :meth:`PairedBootstrap.mean_of_gaps`, of
    its mean over classifiers); ``denominator_in_noise`` is set when that interval includes 0 (for mean_of_gaps:
    when any classifier's own one does), so the gap is a ratio of noise and should not be read. ``n_dropped``
    resamples had a zero denominator and were left out of the interval; ``n_used`` were kept.
    """

    denominator: Interval
    denominator_in_noise: bool
    n_used: int
    n_dropped: int


class PairedBootstrap:
    """One seeded set of bootstrap resamples of ``n_images`` test images, shared by every condition and classifier.

    ``indices`` (``(n_boot, n_images)`` int64) holds the resampled image positions; row ``b`` is resample ``b``.
    """

    def __init__(self, n_images: int, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> None:
        if isinstance(n_images, bool) or not isinstance(n_images, int | np.integer) or n_images < 1:
            raise ValueError(f"n_images={n_images!r}: pass the number of test images (>= 1)")
        if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
            raise ValueError(f"n_boot={n_boot!r}: pass a number of bootstrap resamples >= 1 (e.g. 2000)")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level={level!r}: pass a confidence level strictly between 0 and 1 (e.g. 0.95)")
        self.n_images, self.n_boot, self.seed, self.level = int(n_images), int(n_boot), int(seed), float(level)
        rng = np.random.default_rng(seed)
        self.indices = rng.integers(0, self.n_images, size=(self.n_boot, self.n_images), dtype=np.int64)
        self.indices.setflags(write=False)
        # counts[b, i]: how often image i is drawn in resample b; a resample's number of correct answers is then a
        # matrix product, exact in float64 (integers far below 2^53)
        flat = (self.indices + np.arange(self.n_boot, dtype=np.int64)[:, None] * self.n_images).ravel()
        self._counts = np.bincount(flat, minlength=self.n_boot * self.n_images).reshape(self.n_boot, self.n_images)
        self._counts = self._counts.astype(np.float64)

    def __repr__(self) -> str:
        return (f"PairedBootstrap(n_images={self.n_images}, n_boot={self.n_boot}, seed={self.seed}, "
                f"level={self.level})")

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _matrix(self, correct: np.ndarray, name: str) -> np.ndarray:
        """``correct`` as a (k, n) float64 0/1 matrix, validated."""
        x = np.asarray(correct)
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: expected shape (n,) or (k, n) with n = {self.n_images}, got {x.shape}")
        if x.size == 0:
            raise ValueError(f"{name}: empty array {x.shape}; pass one boolean per test image")
        if x.shape[-1] != self.n_images:
            raise ValueError(f"{name}: {x.shape[-1]} images but the bootstrap was drawn for {self.n_images}")
        if x.dtype != np.bool_ and (not np.issubdtype(x.dtype, np.number) or not np.isin(x, (0, 1)).all()):
            raise ValueError(f"{name}: expected booleans (or 0/1), got dtype {x.dtype} with other values")
        return np.atleast_2d(x).astype(np.float64)

    def _same_shape(self, **arrays: np.ndarray) -> list[np.ndarray]:
        mats = [self._matrix(a, name) for name, a in arrays.items()]
        shapes = {name: np.shape(a) for name, a in arrays.items()}
        if len({np.shape(a) for a in arrays.values()}) > 1:
            raise ValueError("shape mismatch: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
        return mats

    def _counts_correct(self, m: np.ndarray) -> np.ndarray:
        """Correct answers per resample and classifier, (n_boot, k); exact integers stored as floats."""
        return self._counts @ m.T

    def _mean_accuracy(self, m: np.ndarray) -> Interval:
        """Mean over the k rows of their accuracies (sum / (k n): exact, so k identical rows give one row's)."""
        value = m.sum() / m.size
        samples = self._counts_correct(m).sum(axis=1) / m.size
        return self._interval(value, samples)

    def _interval(self, value: float, samples: np.ndarray) -> Interval:
        low, high = self._percentiles(samples)
        return Interval(float(value), low, high, self.level)

    def _percentiles(self, samples: np.ndarray) -> tuple[float, float]:
        if samples.size == 0:
            return math.nan, math.nan
        alpha = (1.0 - self.level) / 2.0
        low, high = np.quantile(samples, [alpha, 1.0 - alpha])
        return float(low), float(high)

    def _scores(self, values: np.ndarray, name: str) -> np.ndarray:
        """Per-image scores (any real numbers, e.g. Dice) as a (k, n) float64 matrix, validated."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim not in (1, 2) or x.size == 0 or x.shape[-1] != self.n_images:
            raise ValueError(f"{name}: expected shape (n,) or (k, n) with n = {self.n_images}, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: scores must be finite numbers")
        return np.atleast_2d(x)

    # -- statistics -------------------------------------------------------------------------------------------------
    def accuracy(self, correct: np.ndarray) -> Interval:
        """Accuracy (for (k, n): the mean over classifiers of their accuracies) and its interval."""
        m = self._matrix(correct, "correct")
        return self._mean_accuracy(m)

    def difference(self, a: np.ndarray, b: np.ndarray) -> Interval:
        """Accuracy of ``a`` minus accuracy of ``b`` (means over classifiers for (k, n)), on the same resamples."""
        ma, mb = self._same_shape(a=a, b=b)
        return self._mean_accuracy(ma - mb)

    def mean_score(self, values: np.ndarray) -> Interval:
        """Mean of a per-image score (for (k, n): over rows and images) and its interval."""
        m = self._scores(values, "values")
        return self._interval(m.mean(), (self._counts @ m.T).sum(axis=1) / m.size)

    def score_difference(self, a: np.ndarray, b: np.ndarray) -> Interval:
        """Mean score of ``a`` minus that of ``b``, paired: the same resampled images for both."""
        ma, mb = self._scores(a, "a"), self._scores(b, "b")
        if ma.shape != mb.shape:
            raise ValueError(f"shape mismatch: a {ma.shape}, b {mb.shape}")
        return self.mean_score(ma - mb)

    def gap_closed(self, cond: np.ndarray, original: np.ndarray, upper: np.ndarray) -> GapInterval:
        """(acc(cond) - acc(original)) / (acc(upper) - acc(original)): 0 = no gain, 1 = as good as ``upper``.

        For (k, n) inputs the accuracies are means over classifiers (a ratio of means; see the module docstring).
        The value is NaN when the full-sample denominator is 0; resamples with a zero denominator are dropped.
        """
        mc, mo, mu = self._same_shape(cond=cond, original=original, upper=upper)
        num_full, den_full = (mc - mo).sum(), (mu - mo).sum()  # sums of integers: exact, so == 0 is safe
        num = self._counts_correct(mc - mo).sum(axis=1)
        den = self._counts_correct(mu - mo).sum(axis=1)
        keep = den != 0
        value = num_full / den_full if den_full != 0 else math.nan
        low, high = self._percentiles(num[keep] / den[keep])
        denominator = self.difference(upper, original)
        return GapInterval(float(value), low, high, self.level, denominator=denominator,
                           denominator_in_noise=not denominator.excludes_zero, n_used=int(keep.sum()),
                           n_dropped=int((~keep).sum()))

    def mean_of_gaps(self, cond: np.ndarray, original: np.ndarray, upper: np.ndarray) -> GapInterval:
        """Mean over classifiers of the per-classifier gap closed, with its interval (1-D: same as gap_closed).

        A resample is dropped when any classifier's denominator is 0 in it (its gap is undefined); the value is NaN
        when any classifier's full-sample denominator is 0. ``denominator_in_noise`` is set when any classifier's
        interval of acc(upper) - acc(original) includes 0; ``denominator`` is the interval of its mean.
        """
        mc, mo, mu = self._same_shape(cond=cond, original=original, upper=upper)
        num_full, den_full = (mc - mo).sum(axis=1), (mu - mo).sum(axis=1)
        num, den = self._counts_correct(mc - mo), self._counts_correct(mu - mo)  # (n_boot, k)
        keep = (den != 0).all(axis=1)
        value = (num_full / den_full).mean() if (den_full != 0).all() else math.nan
        low, high = self._percentiles((num[keep] / den[keep]).mean(axis=1))
        per_classifier = [self.difference(u, o) for u, o in zip(mu, mo, strict=True)]
        return GapInterval(float(value), low, high, self.level, denominator=self.difference(upper, original),
                           denominator_in_noise=any(not d.excludes_zero for d in per_classifier),
                           n_used=int(keep.sum()), n_dropped=int((~keep).sum()))
