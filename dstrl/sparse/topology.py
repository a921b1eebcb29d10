"""Topology updates: drop the weakest active connections, grow as many new ones.

A rule differs from another only in its drop score and grow score (lower is chosen first).
Everything works on lists of layers with any leading member dimensions, and ranks all layers
and members in one sort: no Python loop over members or over random draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dstrl.sparse.kinds import DropScore, check_choice


def lowest(
    scores: list[Tensor], counts: list[Tensor], bounds: list[Tensor] | None = None
) -> list[Tensor]:
    """Per row, mark the ``counts[row]`` entries with the lowest score (``inf`` is never taken).

    ``scores[l]`` is (rows, n_l) and ``counts[l]`` is (rows,). The layers are padded into one
    matrix so that a single top-k ranks every row of every layer. ``bounds`` (like ``counts``)
    bound the counts by what the masks alone allow: top-k breaks ties differently for another
    k, so with the bound a row's choice never depends on another row's weights (one member's
    values cannot change another member's topology).
    """
    width = max(s.shape[1] for s in scores)
    padded = torch.cat(
        [torch.nn.functional.pad(s, (0, width - s.shape[1]), value=math.inf) for s in scores]
    )
    wanted = torch.cat(counts)
    limit = wanted if bounds is None else torch.maximum(wanted, torch.cat(bounds))
    most = min(int(limit.max()), width) if limit.numel() else 0  # a row has no more entries
    chosen = torch.zeros(padded.shape, dtype=torch.bool, device=padded.device)
    if most > 0:
        values, index = padded.topk(most, dim=1, largest=False, sorted=True)
        take = torch.arange(most, device=padded.device) < wanted.unsqueeze(1)
        chosen.scatter_(1, index, take & torch.isfinite(values))
    return [
        c[:, : s.shape[1]]
        for c, s in zip(chosen.split([s.shape[0] for s in scores]), scores, strict=True)
    ]


def _inf_where_not(condition: Tensor, values: Tensor) -> Tensor:
    return torch.where(condition, values, torch.full_like(values, math.inf))


@dataclass(frozen=True)
class SET:
    """Sparse Evolutionary Training: drop by weight, grow uniformly at random.

    ``drop_score="signed"`` drops the given fraction separately from the smallest non-negative
    and the largest (closest to zero) negative weights, as the DS-TD3 release does;
    ``"magnitude"`` drops the smallest ``|w|``.
    """

    drop_score: DropScore = "signed"
    group: int | None = None
    """With N:M masks, M: a connection dropped from a group of M consecutive inputs is regrown
    in the same group, so every group keeps its N connections."""
    needs_gradients: ClassVar[bool] = False
    regrows_dropped: ClassVar[bool] = False
    """Whether a just-dropped connection competes for growth with the inactive positions
    (RigL's rule). Otherwise (dstrl's SET) it is regrown only where nothing else is free; the
    DS-TD3 release draws among all inactive positions, the just-dropped included (README:
    "Growth avoids what was just dropped"). Either way one regrown keeps its weight."""

    def __post_init__(self) -> None:
        check_choice("drop score", self.drop_score, DropScore)

    def density_after(self, step: int | None, layer: int, density: float) -> float:
        """A layer's planned density after an update at ``step``: prune-and-grow keeps it."""
        return density

    def change(
        self,
        weights: list[Tensor],
        masks: list[Tensor],
        fraction: float,
        step: int | None,
        generator: torch.Generator,
        gradients: list[Tensor] | None = None,
    ) -> TopologyChange:
        """One topology update of (rows, n) views: prune ``fraction`` and regrow as many."""
        return prune_and_grow(weights, masks, fraction, self, generator, gradients)

    def drop(self, weights: list[Tensor], masks: list[Tensor], fraction: float) -> list[Tensor]:
        """Boolean (rows, n) tensors of the active connections to remove."""
        if self.drop_score == "magnitude":
            scores = [_inf_where_not(m, w.abs()) for w, m in zip(weights, masks, strict=True)]
            counts = [torch.round(fraction * m.sum(1)).long() for m in masks]
            return lowest(scores, counts)
        positive = [m & (w >= 0) for w, m in zip(weights, masks, strict=True)]
        negative = [m & (w < 0) for w, m in zip(weights, masks, strict=True)]
        scores = [_inf_where_not(p, w) for p, w in zip(positive, weights, strict=True)]
        scores += [_inf_where_not(n, -w) for n, w in zip(negative, weights, strict=True)]
        counts = [torch.round(fraction * s.sum(1)).long() for s in positive + negative]
        bound = [torch.round(fraction * m.sum(1)).long() for m in masks] * 2
        chosen = lowest(scores, counts, bound)
        half = len(weights)
        return [p | n for p, n in zip(chosen[:half], chosen[half:], strict=True)]

    def grow_scores(
        self,
        weights: list[Tensor],
        masks: list[Tensor],
        generator: torch.Generator,
        gradients: list[Tensor] | None = None,
    ) -> list[Tensor]:
        """Uniform random priority for every position (lower is grown first)."""
        return [
            torch.rand(w.shape, generator=generator, device=generator.device).to(w.device)
            for w in weights
        ]


@dataclass(frozen=True)
class RigL(SET):
    """Rigged Lottery (Evci et al., 2020): drop as SET, grow where the dense gradient of the loss
    is largest in magnitude, among every position inactive after the drop (the just-dropped
    ones too, which then keep their weights). New weights still start at zero."""

    needs_gradients: ClassVar[bool] = True
    regrows_dropped: ClassVar[bool] = True

    def grow_scores(
        self,
        weights: list[Tensor],
        masks: list[Tensor],
        generator: torch.Generator,
        gradients: list[Tensor] | None = None,
    ) -> list[Tensor]:
        """``-|∂L/∂w|`` (lower is grown first) from the dense gradients of the update step."""
        if gradients is None:
            raise ValueError("RigL grows by gradient: the dense gradients are required")
        return [-g.abs() for g in gradients]


@dataclass
class TopologyChange:
    """Result of one prune-and-grow: the new masks and what moved, per layer (rows, n)."""

    masks: list[Tensor]
    dropped: list[Tensor]
    grown: list[Tensor]


def prune_and_grow(
    weights: list[Tensor],
    masks: list[Tensor],
    fraction: float,
    rule: SET,
    generator: torch.Generator,
    gradients: list[Tensor] | None = None,
) -> TopologyChange:
    """Drop ``fraction`` of each row's active connections and grow the same number.

    Inputs are (rows, n) views (members flattened into rows, weights flattened into n). Growth
    prefers positions that were inactive before this update; a connection just dropped is only
    regrown when nothing else is free, unless ``rule.regrows_dropped``: then it competes with
    them. One regrown is neither dropped nor grown. The active count of every row is
    unchanged; with ``rule.group`` (N:M masks) so is the count of every group of that many
    consecutive entries. ``gradients`` (same views, dense) are needed by rules that grow by
    gradient.
    """
    dropped = rule.drop(weights, masks, fraction)
    priority = rule.grow_scores(weights, masks, generator, gradients)
    # Positions inactive before the update come first; a just-dropped one only after all of
    # them (its priority is shifted past every other), or, regrown by RigL's rule, beside them;
    # still-active ones never grow.
    scores = []
    for p, m, d in zip(priority, masks, dropped, strict=True):
        spread = p.amax(1, keepdim=True) - p.amin(1, keepdim=True)
        behind = 0 if rule.regrows_dropped else spread + 1
        scores.append(torch.where(d, p + behind, _inf_where_not(~m, p)))
    if rule.group is None:
        # a signed drop takes up to one more than the fraction (rounded once per sign)
        bound = [torch.round(fraction * m.sum(1)).long() + 1 for m in masks]
        grown = lowest(scores, [d.sum(1) for d in dropped], bound)
    else:  # every group regrows what it lost: groups become the rows of the selection
        m = rule.group
        grouped = lowest(
            [s.reshape(-1, m) for s in scores],
            [d.reshape(-1, m).sum(1) for d in dropped],
            [torch.full((s.numel() // m,), m, device=s.device) for s in scores],
        )
        grown = [g.reshape(d.shape) for g, d in zip(grouped, dropped, strict=True)]
    new_masks = [(m & ~d) | g for m, d, g in zip(masks, dropped, grown, strict=True)]
    # a connection dropped and regrown (RigL's choice, or SET's where nothing else was free)
    # stays as it was: its weight and moments kept, counted as no change
    dropped, grown = (
        [d & ~g for d, g in zip(dropped, grown, strict=True)],
        [g & ~d for d, g in zip(dropped, grown, strict=True)],
    )
    return TopologyChange(new_masks, dropped, grown)
