"""Parameter and FLOP counts of (sparse) fully connected layers, from their masks.

Conventions of the sparse-training literature: a layer's forward pass costs ``2·nnz`` FLOPs per
sample for the multiply-adds plus ``n_out`` for the bias; a backward pass costs twice the
forward (gradients with respect to inputs and to weights). Activations are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerShape:
    """One fully connected layer: its size and how many of its weights are active."""

    n_in: int
    n_out: int
    active: int

    @property
    def params(self) -> int:
        """Active weights plus biases."""
        return self.active + self.n_out

    @property
    def dense_params(self) -> int:
        return self.n_in * self.n_out + self.n_out

    def dense(self) -> LayerShape:
        return LayerShape(self.n_in, self.n_out, self.n_in * self.n_out)


def forward_flops(layers: list[LayerShape], batch: int = 1) -> int:
    """FLOPs of one forward pass of an MLP over ``batch`` samples."""
    return batch * sum(2 * layer.active + layer.n_out for layer in layers)


def training_flops(forward: int) -> int:
    """FLOPs of a forward pass plus its backward pass (``3x`` forward)."""
    return 3 * forward
