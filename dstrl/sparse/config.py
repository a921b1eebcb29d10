"""One dataclass that says how a network is sparse and how its topology evolves."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dstrl.sparse.compute import KernelChoice
from dstrl.sparse.distributions import (
    SparsityError,
    er_densities_for_global,
    er_densities_from_lambdas,
)
from dstrl.sparse.engine import MaskedLayers
from dstrl.sparse.kinds import Distribution, DropScore, Growth, TargetMode, Topology
from dstrl.sparse.masks import active_count, nm_mask, random_mask
from dstrl.sparse.pruning import GradualPruning
from dstrl.sparse.schedule import TopologySchedule
from dstrl.sparse.topology import SET, RigL


@dataclass(frozen=True)
class SparsityConfig:
    """How the input and hidden layers of an MLP are sparse and how their topology evolves.

    Density comes from per-layer λ (Erdős–Rényi), from one overall ``density`` spread by
    ``distribution``, or from an N:M pattern (``nm``). The output layer stays dense unless
    ``sparse_output``; the input layer is sparse unless ``dense_input`` (only with ``density`` or
    ``nm``: λ name the input layer's density). ``topology``: static masks, SET/RigL
    prune-and-grow, or gradual magnitude pruning from dense down to the same densities (between
    ``prune_start`` and ``prune_end``).
    """

    topology: Topology = "set"
    lambdas: tuple[float, ...] | None = (7.0, 64.0)
    density: float | None = None
    distribution: Distribution = "er"
    """How an overall ``density`` is spread: Erdős–Rényi (ERK for fully connected layers) or
    the same density in every sparse layer."""
    sparse_output: bool = False
    dense_input: bool = False
    drop_score: DropScore = "signed"
    grow: Growth = "random"
    """random: SET (the paper); gradient: RigL."""
    schedule: TopologySchedule = TopologySchedule()
    target: TargetMode = "magnitude"
    cap_lambdas: bool = False
    """Cap λ densities at 1 (the formula's min) instead of rejecting λ that exceed it."""
    nm: tuple[int, int] | None = None
    """N:M masks: N connections in every group of M consecutive inputs. Layers whose fan-in is
    not a multiple of M stay dense."""
    prune_start: int = 0
    """Gradient step at which gradual pruning starts."""
    prune_end: int = 1
    """Gradient step at which gradual pruning reaches the final densities."""
    kernels: KernelChoice = "auto"
    """How the sparse layers are computed (``dstrl.sparse.compute``)."""

    def __post_init__(self) -> None:
        if self.nm is not None:
            n, m = self.nm
            if not 0 < n < m:
                raise SparsityError(f"N:M needs 0 < N < M, got {n}:{m}")
            if self.topology == "prune":
                raise SparsityError("gradual pruning cannot keep an N:M pattern; use static or SET")
        if self.dense_input and self.density is None and self.nm is None:
            raise SparsityError("a dense input layer needs a global density or N:M, not λ")

    def sparse_layer_indices(self, n_layers: int) -> list[int]:
        first = 1 if self.dense_input else 0
        return list(range(first, n_layers if self.sparse_output else n_layers - 1))

    def layer_densities(self, shapes: list[tuple[int, int]]) -> list[float]:
        """Density of each sparse layer (see ``sparse_layer_indices``)."""
        sparse = [shapes[i] for i in self.sparse_layer_indices(len(shapes))]
        if not sparse:
            raise SparsityError("this network has no layer that can be sparse")
        if self.nm is not None:
            n, m = self.nm
            return [n / m if n_in % m == 0 else 1.0 for n_in, _ in sparse]
        if self.density is not None:
            if self.distribution == "uniform":
                if not 0 < self.density <= 1:
                    raise SparsityError(f"density must be in (0, 1], got {self.density}")
                return [self.density] * len(sparse)
            return er_densities_for_global(sparse, self.density)
        if self.lambdas is None:
            raise SparsityError("give either a density or λ values")
        lambdas = list(self.lambdas)
        # One λ for the input layer, one shared by all hidden layers, one for a sparse output.
        wanted = 3 if self.sparse_output else 2
        if len(lambdas) != wanted:
            raise SparsityError(
                f"give {wanted} λ values (input, hidden{', output' if self.sparse_output else ''})"
            )
        per_layer = [lambdas[0]] + [lambdas[1]] * (len(shapes) - 2)
        if self.sparse_output:
            per_layer.append(lambdas[2])
        return er_densities_from_lambdas(
            sparse, per_layer[: len(sparse)], allow_dense=self.cap_lambdas
        )

    def build(
        self,
        network: nn.Module,
        generator: torch.Generator,
        dense: torch.Tensor | None = None,
        frozen: torch.Tensor | None = None,
    ) -> MaskedLayers:
        """Draw masks for ``network`` (a StackedMLP), zero its inactive weights, wire the rule.

        A layer whose density comes out as 1 (the ER cap), or so close to it that its
        connections round to all of it, is left dense: it has no inactive position to grow
        into, so prune-and-grow could only damage it. ``dense`` and ``frozen``
        (bool, one per member) make members of a mixed population dense (every connection, kept
        so) or static (their masks never change).
        """
        shapes = network.shapes
        indices = self.sparse_layer_indices(len(shapes))
        densities = self.layer_densities(shapes)
        # sparse where the density leaves a position free (0.9999 of a small layer rounds to all)
        chosen = [
            (i, d)
            for i, d in zip(indices, densities, strict=True)
            if active_count(d, *shapes[i]) < shapes[i][0] * shapes[i][1]
        ]
        weights = [network.weights[i] for i, _ in chosen]
        shapes_and_densities = [(w.shape, d) for w, (_, d) in zip(weights, chosen, strict=True)]
        if self.nm is not None:
            masks = [nm_mask(*shape, *self.nm, generator) for shape, _ in shapes_and_densities]
        else:
            dense_start = self.topology == "prune"  # pruning starts dense
            masks = [
                random_mask(*shape, 1.0 if dense_start else d, generator)
                for shape, d in shapes_and_densities
            ]
        rule = None
        group = None if self.nm is None else self.nm[1]
        if self.topology == "set":
            grow = RigL if self.grow == "gradient" else SET
            rule = grow(self.drop_score, group)
        elif self.topology == "prune":
            final = tuple(d for _, d in chosen)
            rule = GradualPruning(final, self.prune_start, self.prune_end)
        if dense is not None:
            masks = [m | dense.to(m.device).view(-1, 1, 1) for m in masks]
        layers = MaskedLayers(
            weights,
            masks,
            rule,
            self.schedule,
            generator,
            indices=[i for i, _ in chosen],
            kernels=self.kernels,
            group=group,
        )
        for members in (dense, frozen):
            if members is not None and members.any():
                layers.freeze(members)
        layers.apply_masks()
        return layers
