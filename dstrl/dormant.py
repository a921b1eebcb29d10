"""Dormant neurons (ReDo, Sokar et al., ICML 2023): measure them, and optionally recycle them.

A hidden unit i of a layer is τ-dormant on a batch when its score
s_i = E|h_i| / mean_j E|h_j| is at most τ: it has (nearly) stopped taking part in the network's
function. Recycling gives such a unit fresh incoming weights and bias (the initial distribution),
zeroes its outgoing weights, so the network's output does not jump, and clears Adam's moments of
all of them. In a sparse layer the unit keeps its number of incoming connections, drawn again at
random positions by the sparse core, so every layer keeps its connection budget.

Works on any ``StackedMLP``; nothing here knows about reinforcement learning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dstrl.nets import StackedMLP
from dstrl.optim import clear_moments
from dstrl.sparse.engine import MaskedLayers


@dataclass(frozen=True)
class Recycling:
    """When to recycle dormant neurons and which ones count as dormant."""

    period: int
    """Gradient steps between recyclings."""
    threshold: float = 0.1
    """τ: a unit whose normalised activity is at most τ is dormant."""


def dormant_units(activations: list[Tensor], threshold: float) -> list[Tensor]:
    """Per hidden layer (each activation (members, batch, n)), which units are τ-dormant:
    bool (members, n). A layer with no activity at all is wholly dormant."""
    result = []
    for h in activations:
        activity = h.abs().mean(dim=1)
        score = activity / (activity.mean(dim=1, keepdim=True) + 1e-9)
        result.append(score <= threshold)
    return result


@torch.no_grad()
def dormant_fractions(net: StackedMLP, x: Tensor, threshold: float) -> list[Tensor]:
    """Per hidden layer of ``net`` on the batch ``x`` (members, batch, n_in), each member's
    fraction of τ-dormant units (members,)."""
    return [d.float().mean(dim=1) for d in dormant_units(net.hidden(x), threshold)]


@torch.no_grad()
def recycle(
    net: StackedMLP,
    dormant: list[Tensor],
    optimizer: torch.optim.Optimizer,
    layers: MaskedLayers | None,
    generator: torch.Generator,
) -> int:
    """Recycle the ``dormant`` units (per hidden layer, bool (members, n)); returns how many.

    Incoming weights and bias are drawn from the initial distribution (U(±1/√fan-in), as
    ``StackedMLP``), at the positions of the row's (possibly redrawn) mask; outgoing weights
    become 0; Adam's moments of everything touched become 0.
    """
    recycled = 0
    # every layer's incoming weights first: a unit recycled in layer k+1 gets fresh incoming
    # weights from layer k's units too, which must end at 0 where those are recycled
    for k, units in enumerate(dormant):
        if not units.any():
            continue
        recycled += int(units.sum())
        incoming, bias = net.weights[k], net.biases[k]
        bound = 1 / math.sqrt(incoming.shape[-1])
        fresh_w = 2 * torch.rand(incoming.shape, generator=generator, device=generator.device) - 1
        fresh_b = 2 * torch.rand(bias.shape, generator=generator, device=generator.device) - 1
        rows = units.unsqueeze(-1)
        if layers is not None and k in layers.indices:
            position = layers.indices.index(k)
            layers.redraw_rows(position, units)
            fresh_w = fresh_w * layers.factors[position]
        incoming.copy_(torch.where(rows, fresh_w.to(incoming.device) * bound, incoming))
        bias.copy_(torch.where(units, fresh_b.to(bias.device) * bound, bias))
        clear_moments(optimizer, incoming, rows.expand_as(incoming))
        clear_moments(optimizer, bias, units)
    for k, units in enumerate(dormant):
        outgoing, columns = net.weights[k + 1], units.unsqueeze(-2)
        outgoing.masked_fill_(columns, 0.0)
        clear_moments(optimizer, outgoing, columns.expand_as(outgoing))
    return recycled
