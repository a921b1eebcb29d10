"""The paper's metrics from evaluation curves, and robust aggregates over seeds.

Final return and learning-curve area (LCA) as in DS-TD3; the interquartile mean (IQM) with a
stratified-bootstrap confidence interval as recommended by Agarwal et al. (2021, "Deep RL at
the Edge of the Statistical Precipice"); steps needed to reach a threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

LAST_EVALUATIONS = 10
LCA_SCALE = 1e6


def final_return(returns: np.ndarray, last: int = LAST_EVALUATIONS) -> float:
    """Mean of the last ``last`` evaluation returns of one seed's curve."""
    returns = np.asarray(returns, dtype=float)
    if returns.ndim != 1 or len(returns) == 0:
        raise ValueError(f"give one seed's curve of evaluations, not an array of {returns.shape}")
    if last < 1:
        raise ValueError(f"last must be at least 1 evaluation, got {last}")
    return float(np.mean(returns[-last:]))


def learning_curve_area(returns: np.ndarray) -> float:
    """Sum of the evaluation returns divided by 10^6.

    This matches the magnitudes the DS-TD3 paper reports for 200 evaluations (every 5,000 of
    1M steps); it is comparable across runs with the same evaluation grid.
    """
    return float(np.sum(returns) / LCA_SCALE)


def mean_std(values: Sequence[float]) -> dict:
    """Mean, (population) std and the values themselves, as written to summary.json."""
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "per_seed": list(map(float, array)),
    }


def iqm(values: np.ndarray) -> float:
    """Interquartile mean as rliable computes it: ``int(n / 4)`` values trimmed from each side
    (the middle 50% where n is a multiple of 4; the middle 3 of 5 seeds; the mean below 4)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25, axis=None))


def stratified_bootstrap_ci(
    groups: Sequence[np.ndarray],
    statistic: Callable[[np.ndarray], float] = iqm,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over all values, resampling with
    replacement *within* each group (a task's seeds), so every task keeps its share; with one
    group, a plain bootstrap."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is a fraction in (0, 1), e.g. 0.95; got {confidence}")
    rng = np.random.default_rng(seed)
    groups = [np.asarray(g, dtype=float) for g in groups]
    if any(len(g) == 0 for g in groups):
        raise ValueError("every group needs at least one value")
    draws = [g[rng.integers(0, len(g), size=(resamples, len(g)))] for g in groups]
    samples = np.concatenate(draws, axis=1)
    values = np.array([statistic(row) for row in samples])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def steps_to_threshold(steps: np.ndarray, curve: np.ndarray, threshold: float) -> int | None:
    """First evaluation step at which ``curve`` reaches ``threshold``; None if it never does.

    Reaching is up to float rounding: a curve that ends flat reaches its own final return, which
    a mean of equal values can round to just above them."""
    if len(steps) != len(curve):
        raise ValueError(f"{len(steps)} steps for a curve of {len(curve)} evaluations")
    curve = np.asarray(curve, dtype=float)
    reached = np.flatnonzero(
        (curve >= threshold) | np.isclose(curve, threshold, rtol=1e-12, atol=0)
    )
    return int(np.asarray(steps)[reached[0]]) if len(reached) else None
