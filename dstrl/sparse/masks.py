"""Random connectivity masks with an exact number of active connections per member."""

from __future__ import annotations

import torch


def active_count(density: float, n_in: int, n_out: int) -> int:
    """Number of connections a layer of the given density keeps (at least one)."""
    return max(1, round(density * n_in * n_out))


def random_mask(
    members: int, n_out: int, n_in: int, density: float, generator: torch.Generator
) -> torch.Tensor:
    """Boolean mask (members, n_out, n_in), each member with the same number of active entries
    placed uniformly at random (an Erdős–Rényi graph with a fixed edge count)."""
    if not 0 < density <= 1:
        raise ValueError(f"a mask's density must be in (0, 1], got {density}")
    k = active_count(density, n_in, n_out)
    scores = torch.rand(members, n_out * n_in, generator=generator, device=generator.device)
    chosen = scores.topk(k, dim=-1).indices
    mask = torch.zeros(members, n_out * n_in, dtype=torch.bool, device=scores.device)
    mask.scatter_(-1, chosen, True)
    return mask.view(members, n_out, n_in)


def nm_mask(
    members: int, n_out: int, n_in: int, n: int, m: int, generator: torch.Generator
) -> torch.Tensor:
    """Boolean mask (members, n_out, n_in) with exactly ``n`` active entries, at random, in every
    group of ``m`` consecutive inputs (``n_in`` must be a multiple of ``m``)."""
    if not 0 < n < m:
        raise ValueError(f"an N:M mask needs 0 < N < M, got {n}:{m}")
    if n_in % m:
        raise ValueError(f"an {n}:{m} mask needs a fan-in divisible by {m}, got {n_in}")
    groups = members * n_out * n_in // m
    scores = torch.rand(groups, m, generator=generator, device=generator.device)
    mask = torch.zeros(groups, m, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, scores.topk(n, dim=1).indices, True)
    return mask.view(members, n_out, n_in)
