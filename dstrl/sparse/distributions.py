"""How many connections each sparse layer gets: Erdős–Rényi (ER) densities.

ER gives a layer with ``n_in`` inputs and ``n_out`` outputs the density
``min(1, λ (n_in + n_out) / (n_in n_out))``, so small layers are denser than large ones.
"""

from __future__ import annotations

from collections.abc import Sequence


class SparsityError(ValueError):
    """A requested sparsity level cannot be realised for the given layer shapes."""


def er_density(n_in: int, n_out: int, lam: float) -> float:
    """Erdős–Rényi density of one layer for the given λ (capped at 1)."""
    if lam <= 0:
        raise SparsityError(f"λ must be positive, got {lam}")
    return min(1.0, lam * (n_in + n_out) / (n_in * n_out))


def er_lambda_limit(n_in: int, n_out: int) -> float:
    """The λ at which an ``n_in`` x ``n_out`` layer becomes dense; any smaller λ keeps it sparse."""
    return n_in * n_out / (n_in + n_out)


def er_densities_from_lambdas(
    shapes: Sequence[tuple[int, int]], lambdas: Sequence[float], *, allow_dense: bool = False
) -> list[float]:
    """Per-layer ER densities from one λ per layer ((n_in, n_out) shapes).

    A λ large enough to give density > 1 is an error unless ``allow_dense``: the user asked for
    a sparse layer and would silently get a dense one.
    """
    if len(shapes) != len(lambdas):
        raise SparsityError(f"got {len(lambdas)} λ values for {len(shapes)} sparse layers")
    densities = []
    for (n_in, n_out), lam in zip(shapes, lambdas, strict=True):
        if lam <= 0:
            raise SparsityError(f"λ must be positive, got {lam}")
        raw = lam * (n_in + n_out) / (n_in * n_out)
        if raw > 1 and not allow_dense:
            limit = er_lambda_limit(n_in, n_out)
            raise SparsityError(
                f"λ={lam:g} gives density {raw:.3f} > 1 for a {n_in}x{n_out} layer; "
                f"use λ ≤ {limit:.1f} for that layer"
            )
        densities.append(min(1.0, raw))
    return densities


def er_densities_for_global(shapes: Sequence[tuple[int, int]], density: float) -> list[float]:
    """ER densities whose connection count over all given layers equals ``density`` overall.

    Solves one ε for ``ε (n_in + n_out) / (n_in n_out)``; layers that would exceed density 1 are
    made dense and ε is solved again over the rest.
    """
    if not 0 < density <= 1:
        raise SparsityError(f"density must be in (0, 1], got {density}")
    sizes = [n_in * n_out for n_in, n_out in shapes]
    budget_total = density * sum(sizes)
    dense: set[int] = set()
    while True:
        budget = budget_total - sum(sizes[i] for i in dense)
        rest = [i for i in range(len(shapes)) if i not in dense]
        if not rest:
            return [1.0] * len(shapes)
        epsilon = budget / sum(shapes[i][0] + shapes[i][1] for i in rest)
        over = {i for i in rest if epsilon * (shapes[i][0] + shapes[i][1]) > sizes[i]}
        if not over:
            break
        dense |= over
    return [
        1.0 if i in dense else epsilon * (n_in + n_out) / (n_in * n_out)
        for i, (n_in, n_out) in enumerate(shapes)
    ]
