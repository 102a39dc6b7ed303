"""Statistics of a config's seed results: intervals, IQM, probability of improvement, separation.

Pure numpy/scipy, torch-free. The unit is the **seed**: every function takes one value per seed
(the objective reduced over steps by ``objective.scope``), never steps or eval prompts, because
seeds are what is independent between runs. Non-finite values (a seed that measured nothing) are
dropped first.

Confidence interval of a seed aggregate (:func:`seed_interval`)
    An *expanded percentile* bootstrap (Hesterberg 2015, "What teachers should know about the
    bootstrap", The American Statistician 69:4): the percentile interval of the bootstrap
    distribution at the widened level ``1 - alpha'`` with
    ``alpha'/2 = Phi(-sqrt(n/(n-1)) * t_{1-alpha/2, n-1})``. The plain percentile, basic and BCa
    intervals are too narrow at small n -- they use the plug-in spread (divisor n) and normal
    tails; the expansion corrects both, as Student's t does for the mean. Measured coverage of a
    nominal 95% interval of the mean (2,000 draws each, so +-0.01; 2,000 resamples; scipy 1.17):

    ========= ===== ===== ===== ===== =====
    n         2     3     5     10    20
    ========= ===== ===== ===== ===== =====
    normal:
    percentile 0.50  0.75  0.85  0.90  0.94
    BCa        0.50  0.73  0.85  0.91  0.93
    expanded   0.50  0.75  0.92  0.94  0.96
    beta(2,5):
    percentile 0.49  0.73  0.85  0.89  0.92
    BCa        0.49  0.71  0.85  0.90  0.93
    expanded   0.49  0.73  0.92  0.94  0.94
    ========= ===== ===== ===== ===== =====

    At n = 2-3 *no* bootstrap interval can do better: every resample's statistic lies within the
    range of the n values, so the interval is at most ``[min, max]``, and a symmetric
    distribution's centre lies outside the sample range with probability ``2 * 2**-n``
    (:func:`coverage_ceiling`: 50% at n = 2, 75% at n = 3, 94% at n = 5). BCa is worse than
    percentile there (its jackknife acceleration is unstable with 2-3 points). The expanded
    interval reaches the ceiling (it *is* ``[min, max]`` at n <= 3) and is close to nominal from
    n ~ 10 (20,000 draws: 0.918, 0.948, 0.949 at n = 5, 10, 20); for the IQM and the median it
    is as close (0.93 at n = 5, 0.96-0.97 at n = 10). For ``min`` / ``max`` a bootstrap cannot
    reach past the sample's extreme, so those intervals undercover at any n. The ranking
    therefore says how many seeds an interval rests on, and the separation verdict uses a test
    that holds at small n (below). The bootstrap RNG is seeded (:data:`BOOTSTRAP_SEED`), so the
    same seeds give the same interval every time.

Interquartile mean (:func:`iqm`)
    The mean of the middle 50% of the values, as rliable defines it
    (``scipy.stats.trim_mean(x, 0.25)``: ``int(0.25 n)`` values cut from each end; with 2-3 seeds
    it is the mean).

Probability of improvement (:func:`prob_improvement`)
    ``P(X > Y)`` over seed pairs, ties counting 1/2 (rliable's definition): the Mann-Whitney U of
    ``x`` divided by ``n * m``.

Separation of the leader from the runner-up (:func:`separation`)
    Welch's t-test on the two configs' seed values (for ``seed_agg: iqm`` and ``median``, Yuen's
    trimmed-mean version with 25% trimming, the robust counterpart of those aggregates),
    **two-sided**: which config leads is read from the same data, so a one-sided test in the
    observed direction would call two identical configs separated twice as often as it says
    (measured: 8-9% at a nominal 5% with 2 configs). "Separated at 95%" means the leader is ahead
    and the two-sided p-value is below 0.05. With more configs, testing the top two is
    conservative (the gap between the top two of k is smaller than a random pair's: 1-4% false
    separations at k = 3-9, measured). Welch's test is valid from 2 seeds per config for
    roughly normal seed values, where a bootstrap or rank test is not (a bootstrap calls two
    configs separated whenever all of one's seeds beat all of the other's: 1 chance in 3 with 2
    seeds each even when they are identical; a Mann-Whitney or permutation test cannot reach
    p < 0.05 below 3-4 seeds each).

Seeds needed (:func:`seeds_to_separate`)
    A normal-approximation power calculation from the observed gap ``d`` and seed spreads
    ``s_x, s_y`` (sample standard deviations), equal seeds per config, two-sided level
    ``alpha = 1 - confidence`` (as the verdict) and power 0.8::

        n = (z_{1-alpha/2} + z_{0.8})**2 * (s_x**2 + s_y**2) / d**2

    "If the observed gap and spread hold, about n seeds per config separate them 4 times in 5".
    Rough: below ~5 seeds Student's t is wider than the normal and s is itself noisy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special
from scipy import stats as sps

Mode = Literal["max", "min"]

CONFIDENCE = 0.95
"""The default confidence of intervals and of the separation verdict."""
BOOTSTRAP_RESAMPLES = 2000
"""Bootstrap resamples per interval: the percentiles at the expanded level's tails (1-2.5%) rest
on 20-50 resamples each, enough for two significant digits, at a fifth of scipy's default."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap RNG: the same seed values always give the same interval."""
POWER = 0.8
"""Power assumed by :func:`seeds_to_separate`."""

_TRIM = {"mean": 0.0, "iqm": 0.25, "median": 0.25, "min": 0.0, "max": 0.0}
"""Trimming of the separation test per seed aggregate: Welch (0) or Yuen (0.25). Medians and
extremes have no reliable small-sample test; median uses Yuen's, min/max are tested on means."""


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The finite values as a float64 array (NaN / inf dropped)."""
    x = np.asarray(values, dtype="float64").ravel()
    return x[np.isfinite(x)]


def iqm(values: Sequence[float] | np.ndarray, axis: int | None = None) -> Any:
    """Interquartile mean: mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``, as
    rliable). With ``axis=None`` the finite values of a 1-D input; NaN when there are none."""
    if axis is None:
        x = finite(values)
        return float(sps.trim_mean(x, 0.25)) if x.size else math.nan
    return sps.trim_mean(np.asarray(values, dtype="float64"), 0.25, axis=axis)


SEED_AGGREGATES: dict[str, Callable[..., Any]] = {
    "mean": np.mean,
    "median": np.median,
    "min": np.min,
    "max": np.max,
    "iqm": iqm,
}
"""The ``objective.seed_agg`` names and their array functions (each takes ``axis=``)."""


def aggregate(values: Sequence[float] | np.ndarray, agg: str = "mean") -> float:
    """The seed aggregate ``agg`` of the finite values; NaN when there are none."""
    x = finite(values)
    return float(SEED_AGGREGATES[agg](x, axis=0)) if x.size else math.nan


def expanded_level(n: int, confidence: float = CONFIDENCE) -> float:
    """The widened confidence level of the expanded percentile interval for ``n`` values:
    ``1 - 2 * Phi(-sqrt(n/(n-1)) * t_{(1+confidence)/2, n-1})`` (NaN for n < 2)."""
    if n < 2:
        return math.nan
    t = sps.t.ppf((1.0 + confidence) / 2.0, n - 1)
    return float(1.0 - 2.0 * sps.norm.cdf(-math.sqrt(n / (n - 1)) * t))


def coverage_ceiling(n: int) -> float:
    """The most any bootstrap interval of n values can cover the centre of a symmetric
    continuous distribution: ``1 - 2 * 2**-n`` (the centre lies outside the sample range
    otherwise). 0.5 at n = 2, 0.75 at n = 3; NaN for n < 2."""
    return 1.0 - 2.0 ** (1 - n) if n >= 2 else math.nan


def seed_interval(
    values: Sequence[float] | np.ndarray,
    agg: str = "mean",
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The ``confidence`` interval ``(low, high)`` of the seed aggregate ``agg`` by an expanded
    percentile bootstrap over the finite seed values (module docstring). ``(nan, nan)`` with
    fewer than 2 values; ``(v, v)`` when every value is ``v``. Deterministic (seeded RNG): the
    same as ``scipy.stats.bootstrap(method="percentile")`` at the expanded level with
    ``rng=np.random.default_rng(seed)``."""
    low, high = seed_intervals([values], agg, confidence, n_resamples, seed)[0]
    return (float(low), float(high))


_BATCH_ELEMENTS = 1 << 22
"""Resampled values held at once by :func:`seed_intervals` (32 MiB of float64)."""


def seed_intervals(
    samples: Sequence[Sequence[float] | np.ndarray],
    agg: str = "mean",
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> np.ndarray:
    """:func:`seed_interval` of many configs at once: an ``[m, 2]`` array of (low, high), one row
    per sample. Configs with the same number of finite seeds share the resample indices -- which
    is what every config's own seeded bootstrap draws, since the draws depend only on ``n`` --
    so each row equals :func:`seed_interval` of that sample, at a fraction of the cost (one
    ``rank`` of 10,000 configs resamples in well under a second)."""
    statistic = SEED_AGGREGATES[agg]
    out = np.full((len(samples), 2), math.nan)
    by_size: dict[int, list[int]] = {}
    rows = [finite(x) for x in samples]
    for i, x in enumerate(rows):
        if x.size >= 2:
            by_size.setdefault(x.size, []).append(i)
    for n, members in by_size.items():
        values = np.stack([rows[i] for i in members])  # [g, n]
        # The draws scipy.stats.bootstrap makes for one sample of n values with this RNG.
        idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))  # [B, n]
        alpha = (1.0 - expanded_level(n, confidence)) / 2.0
        chunk = max(1, _BATCH_ELEMENTS // (n_resamples * n))
        for start in range(0, len(members), chunk):
            part = values[start : start + chunk]
            theta = statistic(part[:, idx], axis=-1)  # [g, B]
            low, high = np.percentile(theta, [100 * alpha, 100 * (1 - alpha)], axis=-1)
            out[members[start : start + chunk]] = np.stack([low, high], axis=-1)
        constant = np.ptp(values, axis=1) == 0.0  # every seed equal: a point, not a spread
        out[np.asarray(members)[constant]] = values[constant][:, :1]
    return out


def prob_improvement(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, mode: Mode = "max"
) -> float:
    """``P(X better than Y)`` over all seed pairs, ties counting 1/2: ``U / (n m)`` with ``U``
    the Mann-Whitney statistic of ``x`` (better = larger for ``mode: max``, smaller for ``min``).
    NaN when either side has no finite value."""
    a, b = finite(x), finite(y)
    if not (a.size and b.size):
        return math.nan
    if mode == "min":
        a, b = -a, -b
    # every pair (n x m): a win counts 1, a tie 1/2 -- exactly U / (n m)
    wins = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    return float(wins) / (a.size * b.size)


def _trimmed_moments(x: np.ndarray, trim: float) -> tuple[float, float, int]:
    """Yuen's moments of a sorted sample: the trimmed mean, the squared standard error
    ``(n - 1) * winsorized_var / (h * (h - 1))`` and ``h``, the values kept (``trim`` = 0:
    the mean, ``var / n`` and n)."""
    n = x.size
    g = int(trim * n)
    h = n - 2 * g
    winsorized = np.clip(x, x[g], x[n - 1 - g])
    se2 = (n - 1) * float(np.var(winsorized, ddof=1)) / (h * (h - 1))
    return float(x[g : n - g].mean()), se2, h


def gap_p_value(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    agg: str = "mean",
    mode: Mode = "max",
) -> float:
    """One-sided p-value that ``x`` is better than ``y``: Welch's t-test on the seed values
    (Yuen's 25%-trimmed version for ``agg`` iqm / median), the same value as
    ``scipy.stats.ttest_ind(x, y, equal_var=False, trim=..., alternative="greater")``, computed
    directly (scipy's wrapper costs ~1 ms a call; racing tests every config after every seed).
    NaN with fewer than 2 finite values on either side (25% trimming keeps at least 2 of
    them). Two spread-free samples give 0 when ``x`` is better, else 1."""
    a, b = np.sort(finite(x)), np.sort(finite(y))
    if a.size < 2 or b.size < 2:
        return math.nan
    trim = _TRIM[agg]
    mean_a, se2_a, h_a = _trimmed_moments(a, trim)
    mean_b, se2_b, h_b = _trimmed_moments(b, trim)
    gap = (mean_a - mean_b) * (1.0 if mode == "max" else -1.0)
    se2 = se2_a + se2_b
    if se2 == 0.0:  # no spread on either side: the gap is certain
        return 0.0 if gap > 0 else 1.0
    df = se2**2 / (se2_a**2 / (h_a - 1) + se2_b**2 / (h_b - 1))  # Welch-Satterthwaite
    return float(special.stdtr(df, -gap / math.sqrt(se2)))  # P(T_df > t)


def seeds_to_separate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    agg: str = "mean",
    mode: Mode = "max",
    confidence: float = CONFIDENCE,
    power: float = POWER,
) -> float:
    """Seeds per config at which the two-sided test at ``confidence`` would separate ``x``
    from ``y`` with probability ``power`` if the observed gap and spreads hold (module docstring
    formula; at least 2). ``inf`` when ``x`` is not ahead; NaN with fewer than 2 finite values on
    either side."""
    a, b = finite(x), finite(y)
    if a.size < 2 or b.size < 2:
        return math.nan
    gap = (aggregate(a, agg) - aggregate(b, agg)) * (1.0 if mode == "max" else -1.0)
    if gap <= 0:
        return math.inf
    spread = float(np.var(a, ddof=1) + np.var(b, ddof=1))
    z = float(sps.norm.ppf((1.0 + confidence) / 2.0) + sps.norm.ppf(power))
    return float(max(2, math.ceil(z * z * spread / (gap * gap))))


@dataclass(frozen=True)
class Separation:
    """Whether the leader is separated from the runner-up, from their seed values."""

    gap: float
    """Leader's aggregate minus the runner-up's, in the better direction (>= 0 when the leader
    leads)."""
    p_value: float
    """Two-sided: ``min(1, 2 * gap_p_value(leader, runner_up))`` (NaN with fewer than 2 seeds on
    a side)."""
    separated: bool
    """The leader is ahead and ``p_value < 1 - confidence``."""
    seeds_needed: float
    """:func:`seeds_to_separate` (per config; NaN / inf as there)."""
    n_leader: int
    n_runner_up: int
    confidence: float

    @property
    def more_seeds(self) -> float:
        """More seeds per config suggested to separate them: 0 if separated, else
        ``seeds_needed`` minus the seeds the thinner side has (at least 1); NaN / inf as
        ``seeds_needed``."""
        if self.separated:
            return 0.0
        if not math.isfinite(self.seeds_needed):
            return self.seeds_needed
        return float(max(1, int(self.seeds_needed) - min(self.n_leader, self.n_runner_up)))

    def sentence(self, leader: str = "the leader", runner_up: str = "the runner-up") -> str:
        """The verdict in one sentence, e.g. ``trial 3 leads trial 5 by 0.042: separated at
        95% (p = 0.004, 5 vs 5 seeds).``"""
        level = f"{self.confidence:.0%}"
        seeds = f"{self.n_leader} vs {self.n_runner_up} seeds"
        head = f"{leader} leads {runner_up} by {self.gap:.3g}"
        if min(self.n_leader, self.n_runner_up) < 2:
            return (
                f"{head} with {seeds}: too few to judge at {level}; "
                "run at least 2 seeds per config."
            )
        if self.separated:
            return f"{head}: separated at {level} (p = {self.p_value:.2g}, {seeds})."
        if self.gap <= 0 or not math.isfinite(self.more_seeds):
            return (
                f"{leader} and {runner_up} are tied ({seeds}): not separated at {level}, "
                "and more seeds would not separate them unless their values move apart."
            )
        more = int(self.more_seeds)
        return (
            f"{head}: not separated at {level} (p = {self.p_value:.2g}, {seeds}); about "
            f"{more} more seed{'s' if more > 1 else ''} per config would separate them if the "
            "gap and spread hold."
        )


def separation(
    leader: Sequence[float] | np.ndarray,
    runner_up: Sequence[float] | np.ndarray,
    agg: str = "mean",
    mode: Mode = "max",
    confidence: float = CONFIDENCE,
) -> Separation:
    """The :class:`Separation` of two configs' seed values (leader first): the two-sided
    Welch (Yuen) test of the module docstring."""
    a, b = finite(leader), finite(runner_up)
    gap = (aggregate(a, agg) - aggregate(b, agg)) * (1.0 if mode == "max" else -1.0)
    one_sided = gap_p_value(a, b, agg, mode)
    p = one_sided if math.isnan(one_sided) else min(1.0, 2.0 * one_sided)
    return Separation(
        gap=gap,
        p_value=p,
        separated=bool(gap > 0 and p < 1.0 - confidence),
        seeds_needed=seeds_to_separate(a, b, agg, mode, confidence),
        n_leader=int(a.size),
        n_runner_up=int(b.size),
        confidence=confidence,
    )
