"""Stacked MLPs: ``members`` independent networks evaluated with one batched matmul per layer.

Every weight is shaped (members, n_out, n_in) and every bias (members, n_out); an input is
(members, batch, n_in). One agent is members = 1; a population of seeds, or a pair of twin
critics, is simply more members.

The backward pass is written by hand: under autograd the whole network is one node, and a loss
whose output gradient has a closed form (a critic's regression) skips autograd altogether
(``forward_saved`` / ``backward_from``). On a CPU, autograd's per-operation bookkeeping costs
about as much as a small layer's arithmetic.

The sparse core may compute some layers by their connections only (``use_kernels``; see
``dstrl.sparse.compute``). A network with such a layer runs every layer feature-major,
(members, features, batch), the layout those kernels need; its dense layers are the same
matrix products transposed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dstrl.sparse import kernels
from dstrl.sparse.compute import LayerKernel, changes
from dstrl.sparse.kernels import Connections


class Connected(NamedTuple):
    """A layer computed by its connections: them, and numpy views of the layer's whole weight
    and bias stacks, the kernels' operands (views kept by the network, so that no pass pays for
    the conversion)."""

    connections: Connections
    weight: np.ndarray
    bias: np.ndarray


Plan = list[Connected | None]  # per layer: computed by its connections, or dense


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


NARROW = 64
"""A product whose output has fewer columns than this, and fewer than rows, is computed
transposed on the CPU (``product``)."""


def product(a: Tensor, b: Tensor) -> Tensor:
    """``torch.bmm(a, b)``, contiguous. On the CPU an output with few columns (an input layer's
    gradients: a handful of features against 256 units) is computed as ``(bᵀ·aᵀ)ᵀ``, its long side
    as the product's rows, which MKL's sgemm runs far faster. On one AMD EPYC thread the weight
    gradient of twin critics' input layer (2x256x23, batch 100) took 34 µs instead of 61, with
    the same bits (``python benchmarks/products.py`` times both and compares them)."""
    columns = b.shape[-1]
    if a.is_cpu and columns < NARROW and columns < a.shape[-2]:
        return torch.bmm(b.mT, a.mT).mT.contiguous()
    return torch.bmm(a, b)


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
            grad_w[i] = product(d.mT, inputs[i])
        if needs[1 + layers + i]:
            grad_b[i] = d.sum(dim=1)
        if i > 0:
            d = torch.ops.aten.threshold_backward(product(d, weights[i]), inputs[i], 0)
        elif needs[0]:
            grad_x = product(d, weights[0])
    return grad_x, grad_w, grad_b


class _Members:
    """Which members of a stack a pass uses: a slice for tensors, indices for the kernels."""

    def __init__(self, members: slice | None, total: int) -> None:
        self.slice = slice(None) if members is None else members
        self.index = np.ascontiguousarray(np.arange(total)[self.slice])
        self.all = len(self.index) == total

    def widen(self, grad: Tensor | None, shape: torch.Size) -> Tensor | None:
        """A gradient of the members taking part as one of the whole stack (zero elsewhere)."""
        if grad is None or self.all:
            return grad
        whole = grad.new_zeros(shape)
        whole[self.slice] = grad
        return whole


LANES = 16
"""The feature-major batch is padded to a multiple of this (from this size on), so that every
loop of the kernels over it runs in whole vectors: at batch 100, 15% less time per product."""


def feature_major(t: Tensor) -> Tensor:
    """(E', B, n) as (E', n, B'), B' the batch padded with zeros to a multiple of ``LANES``
    (float32 on the CPU, as the kernels are; one compiled pass, a fifth of the time of torch's
    three operations)."""
    members, batch, n = t.shape
    padded = batch if batch < LANES else -(-batch // LANES) * LANES
    out = np.empty((members, n, padded), np.float32)
    kernels.transpose(t.detach().numpy(), out)
    return torch.from_numpy(out)


def batch_major(t: Tensor, batch: int) -> Tensor:
    """The inverse of ``feature_major`` for a batch of ``batch``."""
    out = np.empty((t.shape[0], batch, t.shape[1]), np.float32)
    kernels.transpose(t.detach().numpy(), out)
    return torch.from_numpy(out)


def _forward_sparse(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    tanh: bool,
    plan: Plan,
    rows: _Members,
):
    """``_forward`` feature-major: x (E', B, n_in) to the output (E', n_out, B') and every
    layer's input (E', n_in, B'), B' the padded batch (``feature_major``; the padding's values
    are never read into a real one's); the weights and biases are whole stacks, of which
    ``rows`` (_Members) take part."""
    h = feature_major(x)
    inputs = [h]
    last = len(weights) - 1
    for i, (w, b, layer) in enumerate(zip(weights, biases, plan, strict=True)):
        if layer is None:
            h = torch.baddbmm(b[rows.slice].unsqueeze(2), w[rows.slice], h)
            if i < last:
                h = torch.relu_(h)
        else:
            c = layer.connections
            h = kernels.forward(layer.weight, layer.bias, c, rows.index, h, relu=i < last)
        if i < last:
            inputs.append(h)
    return (torch.tanh_(h) if tanh else h), inputs


def _backward_sparse(
    grad: Tensor,
    y: Tensor,
    inputs: Sequence[Tensor],
    weights: Sequence[Tensor],
    tanh: bool,
    needs: Sequence[bool],
    plan: Plan,
    rows: _Members,
    keepers: Sequence[LayerKernel | None],
    reuse: bool = False,
    grad_batch: int | None = None,
) -> tuple[Tensor | None, list[Tensor | None], list[Tensor | None]]:
    """``_backward`` for ``_forward_sparse``: ``grad`` and ``y`` are feature-major and padded
    (``grad`` with zeros, so the padding adds nothing to a weight or bias gradient), the
    gradients come out as the (sliced) parameters are shaped. ``keepers`` are the layers'
    kernels, which keep what a dense weight gradient needs if they ask for it; with ``reuse``
    the weight gradients computed by connections are their buffers (``gradient_buffer``).
    ``grad_batch``: the batch without padding, for the input gradient."""
    layers = len(weights)
    grad_w: list[Tensor | None] = [None] * layers
    grad_b: list[Tensor | None] = [None] * layers
    d = (torch.ops.aten.tanh_backward(grad, y) if tanh else grad).contiguous()
    grad_x = None
    for i in reversed(range(layers)):
        w, layer, x = weights[i], plan[i], inputs[i]
        if needs[1 + i]:
            if layer is None:
                grad_w[i] = product(d, x.mT)
            else:
                keeper = keepers[i]
                if reuse and keeper is not None:
                    out = keeper.gradient_buffer(w)
                else:
                    out = w.new_zeros(d.shape[0], *w.shape[1:])
                bias = needs[1 + layers + i]  # summed in the same pass
                grad_w[i], grad_b[i] = kernels.weight_gradient(
                    layer.connections, rows.index, x, d, out, bias
                )
                if keeper is not None and keeper.keep_inputs and rows.all:
                    keeper.saved = (d, x)
        if needs[1 + layers + i] and grad_b[i] is None:
            grad_b[i] = d.sum(dim=2)
        if i == 0 and not needs[0]:
            break
        gate = x if i > 0 else None
        if layer is None:
            d_in = product(w[rows.slice].mT, d)
            if gate is not None:
                d_in = torch.ops.aten.threshold_backward(d_in, gate, 0)
        else:
            d_in = kernels.input_gradient(layer.weight, layer.connections, rows.index, d, gate)
        if i > 0:
            d = d_in
        else:
            grad_x = d_in[:, :, :grad_batch].mT
    return grad_x, grad_w, grad_b


class _SparseMLPFunction(torch.autograd.Function):
    """``_MLPFunction`` for a network with layers computed by their connections."""

    @staticmethod
    def forward(ctx, x: Tensor, tanh: bool, plan: Plan, rows, keepers, *params: Tensor):
        weights, biases = params[: len(params) // 2], params[len(params) // 2 :]
        y, inputs = _forward_sparse(x, weights, biases, tanh, plan, rows)
        ctx.tanh, ctx.plan, ctx.rows, ctx.keepers = tanh, plan, rows, keepers
        ctx.layers = len(weights)
        ctx.save_for_backward(y, *inputs, *weights)
        return batch_major(y, x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        y, *saved = ctx.saved_tensors
        inputs, weights = saved[: ctx.layers], saved[ctx.layers :]
        needs = (ctx.needs_input_grad[0], *ctx.needs_input_grad[5:])
        rows = ctx.rows
        grad_x, grad_w, grad_b = _backward_sparse(
            feature_major(grad),
            y,
            inputs,
            weights,
            ctx.tanh,
            needs,
            ctx.plan,
            rows,
            ctx.keepers,
            grad_batch=grad.shape[1],
        )
        shapes = [w.shape for w in weights] + [w.shape[:2] for w in weights]
        grads = [rows.widen(g, shape) for g, shape in zip([*grad_w, *grad_b], shapes, strict=True)]
        return grad_x, None, None, None, None, *grads


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
        self._listed()
        self.kernels: list[LayerKernel | None] = [None] * len(weights)
        self._all = _Members(None, members)

    def _listed(self) -> None:
        """Keep the parameters as plain tuples too: every pass reads them all, and a
        ParameterList hands out each element through a string-keyed lookup (about a microsecond
        apiece, 40 per TD3 update)."""
        self._weights, self._biases = tuple(self.weights), tuple(self.biases)
        self._connected: list[Connected | None] = [None] * len(self._weights)
        self._planned_at: int | None = None  # ``changes()`` when ``_planned`` was taken
        self._planned: Plan | None = None

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (torch's signature)
        module = super()._apply(fn, recurse)
        self._listed()  # a conversion may give the lists new parameters
        return module

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._listed()  # a copy's views would be of copied arrays, not of its parameters

    def use_kernels(self, chosen: dict[int, LayerKernel]) -> None:
        """Let the sparse core decide how the layers ``chosen`` (by index) are computed."""
        self.kernels = [chosen.get(i) for i in range(len(self.weights))]
        for kernel in chosen.values():
            kernel.used = True
        self._planned_at = None

    def _plan(self) -> Plan | None:
        """Which layers run by their connections now; None when every layer is dense. Taken
        again only when some support has changed since (``changes``)."""
        now = changes()
        if self._planned_at != now:
            self._planned_at = now
            plan = [
                None if k is None else self._layer(i, k.connections())
                for i, k in enumerate(self.kernels)
            ]
            self._planned = plan if any(c is not None for c in plan) else None
        return self._planned

    def _layer(self, i: int, connections: Connections | None) -> Connected | None:
        """Layer ``i`` as the plan holds it, built once per change of its connections."""
        if connections is None:
            return None
        layer = self._connected[i]
        if layer is None or layer.connections is not connections:
            weight, bias = self._weights[i].detach(), self._biases[i].detach()
            layer = self._connected[i] = Connected(connections, weight.numpy(), bias.numpy())
        return layer

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(n_in, n_out) of every layer, input layer first."""
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    def forward(self, x: Tensor, members: slice | None = None, frozen: bool = False) -> Tensor:
        """Map (members, batch, n_in) to (members, batch, n_out); ``members`` picks a subset.

        ``frozen`` treats the parameters as constants: gradients reach ``x`` only (an actor's
        loss through its critic), and no weight gradient is computed.
        """
        params = [*self._weights, *self._biases]
        if frozen:
            params = [p.detach() for p in params]
        grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))
        n = len(params) // 2
        plan = self._plan()
        if plan is not None:
            rows = self._all if members is None else _Members(members, self.members)
            if grad:
                tanh = self.output_tanh
                return _SparseMLPFunction.apply(x, tanh, plan, rows, self.kernels, *params)
            y = _forward_sparse(x, params[:n], params[n:], self.output_tanh, plan, rows)[0]
            return batch_major(y, x.shape[1])
        if members is not None:
            params = [p[members] for p in params]
        if grad:
            return _MLPFunction.apply(x, self.output_tanh, *params)
        return _forward(x, params[:n], params[n:], self.output_tanh)[0]

    @torch.no_grad()
    def hidden(self, x: Tensor) -> list[Tensor]:
        """The output of every hidden layer (after its ReLU) for the input ``x``."""
        return _forward(x, self._weights, self._biases, self.output_tanh)[1][1:]

    @torch.no_grad()
    def forward_saved(self, x: Tensor) -> tuple[Tensor, tuple]:
        """Output and what ``backward_from`` needs, without an autograd graph: for a loss whose
        gradient at the output is known in closed form (a regression), autograd's bookkeeping
        is pure overhead."""
        weights, biases = self._weights, self._biases
        plan = self._plan()
        if plan is None:
            y, inputs = _forward(x, weights, biases, self.output_tanh)
            return y, (y, inputs, None)
        y, inputs = _forward_sparse(x, weights, biases, self.output_tanh, plan, self._all)
        return batch_major(y, x.shape[1]), (y, inputs, plan)

    @torch.no_grad()
    def backward_from(self, saved: tuple, grad: Tensor) -> None:
        """Set every parameter's ``.grad`` from the loss gradient ``grad`` at the output of the
        ``forward_saved`` call that returned ``saved``."""
        y, inputs, plan = saved
        needs = (False, *[True] * 2 * len(self._weights))
        weights, tanh = self._weights, self.output_tanh
        if plan is None:
            _, grad_w, grad_b = _backward(grad, y, inputs, weights, tanh, needs)
        else:
            _, grad_w, grad_b = _backward_sparse(
                feature_major(grad),
                y,
                inputs,
                weights,
                tanh,
                needs,
                plan,
                self._all,
                self.kernels,
                True,
            )
        for param, value in zip([*self._weights, *self._biases], [*grad_w, *grad_b], strict=True):
            param.grad = value
