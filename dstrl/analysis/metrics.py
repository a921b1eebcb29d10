"""The paper's metrics from evaluation curves: final return and learning-curve area (LCA)."""

from __future__ import annotations

import numpy as np

LAST_EVALUATIONS = 10
LCA_SCALE = 1e6


def final_return(returns: np.ndarray, last: int = LAST_EVALUATIONS) -> float:
    """Mean of the last ``last`` evaluation returns of one seed's curve."""
    if len(returns) == 0:
        raise ValueError("no evaluations")
    return float(np.mean(returns[-last:]))


def learning_curve_area(returns: np.ndarray) -> float:
    """Sum of the evaluation returns divided by 10^6.

    This matches the magnitudes the DS-TD3 paper reports for 200 evaluations (every 5,000 of
    1M steps); it is comparable across runs with the same evaluation grid.
    """
    return float(np.sum(returns) / LCA_SCALE)


def mean_std(values: list[float]) -> dict:
    """Mean, (population) std and the values themselves, as written to summary.json."""
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "per_seed": list(map(float, array)),
    }
