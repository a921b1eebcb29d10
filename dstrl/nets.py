"""Stacked MLPs: ``members`` independent networks evaluated with one batched matmul per layer.

Every weight is shaped (members, n_out, n_in) and every bias (members, n_out); an input is
(members, batch, n_in). One agent is members = 1; a population of seeds, or a pair of twin
critics, is simply more members.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class StackedMLP(nn.Module):
    """ReLU MLP with a leading member axis; initialised like ``torch.nn.Linear``."""

    def __init__(
        self,
        members: int,
        sizes: Sequence[int],
        generator: torch.Generator,
        output_tanh: bool = False,
    ) -> None:
        super().__init__()
        if len(sizes) < 2:
            raise ValueError("an MLP needs at least an input and an output size")
        self.members = members
        self.sizes = tuple(sizes)
        self.output_tanh = output_tanh
        device = generator.device
        weights, biases = [], []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1 / math.sqrt(n_in)
            w = torch.rand(members, n_out, n_in, generator=generator, device=device)
            b = torch.rand(members, n_out, generator=generator, device=device)
            weights.append(nn.Parameter((2 * w - 1) * bound))
            biases.append(nn.Parameter((2 * b - 1) * bound))
        self.weights = nn.ParameterList(weights)
        self.biases = nn.ParameterList(biases)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(n_in, n_out) of every layer, input layer first."""
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    def forward(self, x: Tensor, members: slice | None = None) -> Tensor:
        """Map (members, batch, n_in) to (members, batch, n_out); ``members`` picks a subset."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if members is not None:
                w, b = w[members], b[members]
            x = torch.baddbmm(b.unsqueeze(1), x, w.mT)
            if i < last:
                x = torch.relu(x)
        return torch.tanh(x) if self.output_tanh else x
