"""The uncertainty of retain's scores: 95% intervals, paired differences, calibration.

Every score retain reports is a mean over test items, or over seeds. Its interval is of
one of two kinds, and every result says which (`KIND_ITEMS`, `KIND_SEEDS`):

- **bootstrap over test items** (one run): each task's test items are drawn again with
  replacement, every score is recomputed on the draw, and the interval is the 2.5th to
  97.5th percentile of `REPLICATES` draws (the percentile bootstrap, Efron and
  Tibshirani, 1993). The rows of an accuracy matrix score the same items, so one draw of
  a task's items serves every row: BWT, forgetting and before/after deltas are paired
  within the run, and two runs scored on the same items are paired the same way.
- **over seeds**: the mean of n runs, mean +- t(0.975, n-1) s / sqrt(n).

A paired comparison of two methods is the interval of their difference: over the same
items (one draw shared by both runs) or over the same seeds (the t-interval of the
per-seed differences). A difference whose interval holds zero is within noise.

Two models answering the same items are also compared by McNemar's test (McNemar, 1947):
of the items exactly one of them gets right (b for the first, c for the second), each is
the first's with probability 1/2 under "no change"; the exact two-sided p-value is
min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2). Items both get right or both get
wrong say nothing about the difference.

Expected calibration error (Guo et al., 2017): the items split into 15 equal-width bins
of confidence; ECE = sum_b |B_b|/n * |accuracy(B_b) - mean confidence(B_b)|.

Why retain's own code: scipy.stats.bootstrap resamples one statistic of samples of equal
length when paired; retain's statistics are functions of a whole accuracy matrix whose
tasks have different numbers of items, resampled per task, the draw shared across rows
and across runs. A vectorised draw of item indices does that in a few lines.
"""

from __future__ import annotations

import math

import numpy as np

from retain.errors import RetainError

LEVEL = 0.95
REPLICATES = 2000
KIND_ITEMS = "bootstrap over test items"
KIND_SEEDS = "t-interval over seeds"
ECE_BINS = 15


def resample_means(groups: dict[str, np.ndarray], replicates: int = REPLICATES, seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Bootstrap draws of the mean of every score vector of every group.

    Args:
        groups: name -> (k, n) scores of n items (NaN: unscored) under k conditions (rows
            of a matrix, before/after, two runs). The k vectors share one draw of items.
    Returns:
        name -> (replicates, k) means of the drawn items (NaN where a draw holds no
        scored item), groups drawn independently of each other.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(groups):  # a fixed order: the same seed gives the same draws
        scores = np.atleast_2d(np.asarray(groups[name], dtype=float))
        n = scores.shape[1]
        if n == 0:
            out[name] = np.full((replicates, scores.shape[0]), np.nan)
            continue
        idx = rng.integers(0, n, size=(replicates, n))
        drawn = scores[:, idx]  # (k, R, n)
        with np.errstate(invalid="ignore"), _quiet():
            out[name] = np.nanmean(drawn, axis=-1).T
    return out


def percentile_interval(draws, level: float = LEVEL) -> list:
    """[low, high] of bootstrap draws (over the first axis), NaN draws left out; None when
    there is no finite draw."""
    draws = np.asarray(draws, dtype=float)
    tail = 100 * (1 - level) / 2
    with _quiet():
        lo, hi = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    if np.ndim(lo) == 0:
        return None if not np.isfinite(lo) else [float(lo), float(hi)]
    return np.stack([lo, hi], axis=-1).tolist()


def seed_interval(values, level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """(mean, low, high) of per-seed values by the t-distribution; no interval from one seed."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return (float("nan"), None, None)
    mean = float(x.mean())
    if len(x) < 2:
        return (mean, None, None)
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return (mean, mean - half, mean + half)


def within_noise(interval) -> bool | None:
    """Whether an interval of a difference holds zero (None: no interval)."""
    if interval is None or interval[0] is None:
        return None
    return bool(interval[0] <= 0 <= interval[1])


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of b against c discordant items (1.0 when none)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)  # integer arithmetic, one rounding at the end


def mcnemar(correct_a, correct_b, alpha: float = 1 - LEVEL) -> dict:
    """McNemar's test of two models' right/wrong answers to the same items, in item order.

    Returns n, both (right), neither, a_only (b: a right, b wrong), b_only (c), p, and
    `significant_gap`: the smallest |b - c| that this many discordant items would need to
    reject "no change" at `alpha` (None: none would).
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise RetainError(f"McNemar needs the same items scored twice, got {a.shape} and {b.shape} answers.")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    d = a_only + b_only
    gap = next((g for g in range(d % 2, d + 1, 2) if mcnemar_exact((d + g) // 2, (d - g) // 2) < alpha), None)
    return {"n": int(a.size), "both": int((a & b).sum()), "neither": int((~a & ~b).sum()), "a_only": a_only,
            "b_only": b_only, "p": mcnemar_exact(a_only, b_only), "significant_gap": gap}


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float | None:
    """ECE with `bins` equal-width bins over [0, 1]; items with no confidence are left out."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    keep = np.isfinite(conf) & np.isfinite(hit)
    conf, hit = conf[keep], hit[keep]
    if len(conf) == 0:
        return None
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of 0 goes to the first
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(which):
        m = which == b
        total += m.sum() / len(conf) * abs(hit[m].mean() - conf[m].mean())
    return float(total)


class _quiet:
    """Silence numpy's warnings about empty slices (a draw with no scored item is NaN)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
