"""Stacked MLPs: ``members`` independent networks evaluated with one batched matmul per layer.

Every weight is shaped (members, n_out, n_in) and every bias (members, n_out); an input is
(members, batch, n_in). One agent is members = 1; a population of seeds, or a pair of twin
critics, is simply more members.

The backward pass is written by hand: under autograd the whole network is one node, and a loss
whose output gradient has a closed form (a critic's regression) skips autograd altogether
(``forward_saved`` / ``backward_from``). On a CPU, autograd's per-operation bookkeeping costs
about as much as a small layer's arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _forward(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], tanh: bool):
    """Output and the input of every layer (x, then each hidden ReLU output)."""
    inputs = [x]
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        x = torch.baddbmm(b.unsqueeze(1), x, w.mT)
        if i < last:
            x = torch.relu_(x)
            inputs.append(x)
    return (torch.tanh_(x) if tanh else x), inputs


def mlp(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], tanh: bool = False):
    """A stacked MLP's output from its parameters alone (inference, no autograd node)."""
    return _forward(x, weights, biases, tanh)[0]


def _backward(
    grad: Tensor,
    y: Tensor,
    inputs: Sequence[Tensor],
    weights: Sequence[Tensor],
    tanh: bool,
    needs: Sequence[bool],
) -> tuple[Tensor | None, list[Tensor | None], list[Tensor | None]]:
    """Gradients of input, weights and biases from the output gradient ``grad``; ``needs`` says
    which (input, then every weight, then every bias), like ``ctx.needs_input_grad``."""
    layers = len(weights)
    grad_w: list[Tensor | None] = [None] * layers
    grad_b: list[Tensor | None] = [None] * layers
    d = torch.ops.aten.tanh_backward(grad, y) if tanh else grad
    grad_x = None
    for i in reversed(range(layers)):
        if needs[1 + i]:
            grad_w[i] = torch.bmm(d.mT, inputs[i])
        if needs[1 + layers + i]:
            grad_b[i] = d.sum(dim=1)
        if i > 0:
            d = torch.ops.aten.threshold_backward(torch.bmm(d, weights[i]), inputs[i], 0)
        elif needs[0]:
            grad_x = torch.bmm(d, weights[0])
    return grad_x, grad_w, grad_b


class _MLPFunction(torch.autograd.Function):
    """y = MLP(x); gradients for whichever of x, weights and biases require them."""

    @staticmethod
    def forward(ctx, x: Tensor, tanh: bool, *params: Tensor) -> Tensor:
        weights, biases = params[: len(params) // 2], params[len(params) // 2 :]
        y, inputs = _forward(x, weights, biases, tanh)
        ctx.tanh = tanh
        ctx.layers = len(weights)
        ctx.save_for_backward(y, *inputs, *weights)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        y, *saved = ctx.saved_tensors
        inputs, weights = saved[: ctx.layers], saved[ctx.layers :]
        needs = (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:])
        grad_x, grad_w, grad_b = _backward(grad, y, inputs, weights, ctx.tanh, needs)
        return grad_x, None, *grad_w, *grad_b


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

    def forward(self, x: Tensor, members: slice | None = None, frozen: bool = False) -> Tensor:
        """Map (members, batch, n_in) to (members, batch, n_out); ``members`` picks a subset.

        ``frozen`` treats the parameters as constants: gradients reach ``x`` only (an actor's
        loss through its critic), and no weight gradient is computed.
        """
        params = [*self.weights, *self.biases]
        if frozen:
            params = [p.detach() for p in params]
        if members is not None:
            params = [p[members] for p in params]
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
            return _MLPFunction.apply(x, self.output_tanh, *params)
        n = len(params) // 2
        return _forward(x, params[:n], params[n:], self.output_tanh)[0]

    @torch.no_grad()
    def hidden(self, x: Tensor) -> list[Tensor]:
        """The output of every hidden layer (after its ReLU) for the input ``x``."""
        return _forward(x, list(self.weights), list(self.biases), self.output_tanh)[1][1:]

    @torch.no_grad()
    def forward_saved(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Output and what ``backward_from`` needs, without an autograd graph: for a loss whose
        gradient at the output is known in closed form (a regression), autograd's bookkeeping
        is pure overhead."""
        y, inputs = _forward(x, list(self.weights), list(self.biases), self.output_tanh)
        return y, [y, *inputs]

    @torch.no_grad()
    def backward_from(self, saved: list[Tensor], grad: Tensor) -> None:
        """Set every parameter's ``.grad`` from the loss gradient ``grad`` at the output of the
        ``forward_saved`` call that returned ``saved``."""
        y, *inputs = saved
        needs = (False, *[True] * 2 * len(self.weights))
        _, grad_w, grad_b = _backward(grad, y, inputs, self.weights, self.output_tanh, needs)
        for param, value in zip([*self.weights, *self.biases], [*grad_w, *grad_b], strict=True):
            param.grad = value
