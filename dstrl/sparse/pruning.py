"""Gradual magnitude pruning (Zhu & Gupta, 2017): dense-to-sparse along a cubic schedule.

The network starts dense. From ``start`` to ``end`` (gradient steps), every topology update
removes the smallest-magnitude active weights until each layer has its scheduled density

    d(t) = d_final + (1 - d_final) · (1 - p)^3,   p = (t - start) / (end - start) in [0, 1],

which prunes fast early, while the network is redundant, and slowly near the end. Nothing is
regrown. The final per-layer densities come from the same distributions as sparse-from-scratch
training, so a pruned and a SET network end with the same connection counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dstrl.sparse.masks import active_count
from dstrl.sparse.topology import TopologyChange, lowest


@dataclass(frozen=True)
class GradualPruning:
    """Cubic-schedule magnitude pruning of every layer towards ``final_densities``."""

    final_densities: tuple[float, ...]
    start: int
    end: int
    needs_gradients: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"pruning needs 0 ≤ start < end, got {self.start} and {self.end}")

    def density_at(self, step: int, final: float) -> float:
        """Scheduled density of a layer whose final density is ``final``."""
        progress = min(max((step - self.start) / (self.end - self.start), 0.0), 1.0)
        return final + (1.0 - final) * (1.0 - progress) ** 3

    def density_after(self, step: int | None, layer: int, density: float) -> float:
        """Layer ``layer``'s planned density after the update at ``step``: the schedule's."""
        assert step is not None, "gradual pruning needs the step to know its density"
        return self.density_at(step, self.final_densities[layer])

    def change(
        self,
        weights: list[Tensor],
        masks: list[Tensor],
        fraction: float,
        step: int | None,
        generator: torch.Generator,
        gradients: list[Tensor] | None = None,
    ) -> TopologyChange:
        """Drop the smallest active ``|w|`` of each row down to the count scheduled at ``step``
        (``fraction`` is unused: the schedule sets the amount)."""
        if step is None:
            raise ValueError("gradual pruning needs the step to know its density")
        if len(weights) != len(self.final_densities):
            raise ValueError(f"{len(weights)} layers but {len(self.final_densities)} densities")
        scores, counts, bounds = [], [], []
        for w, m, final in zip(weights, masks, self.final_densities, strict=True):
            n = w.shape[1]
            keep = active_count(self.density_at(step, final), n, 1)
            scores.append(torch.where(m, w.abs(), torch.full_like(w, torch.inf)))
            counts.append((m.sum(1) - keep).clamp(min=0))
            # a bound from the shapes alone: no row's choice depends on another row's weights
            bounds.append(torch.full_like(counts[-1], n - keep))
        dropped = lowest(scores, counts, bounds)
        grown = [torch.zeros_like(d) for d in dropped]
        new_masks = [m & ~d for m, d in zip(masks, dropped, strict=True)]
        return TopologyChange(new_masks, dropped, grown)
