"""Training products of a stacked sparse layer that touch only its connections (CPU, Numba).

A masked-dense layer pays for every weight, connected or not. Here a layer's connections are
held as compressed rows (CSR: for each member and output unit, the inputs it reads) and
compressed columns (CSC: for each input, the units that read it), and activations are
feature-major, (members, features, batch), so that every connection is one contiguous
multiply-add over the batch:

- forward          Y[o] = b[o] + Σ_{i ∈ row o} W[o, i] · X[i]             (rows)
- input gradient   G_X[i] = Σ_{o ∈ column i} W[o, i] · G_Y[o]            (columns)
- weight gradient  G_W[o, i] = G_Y[o] · X[i], at connections only         (rows)

Each costs 2 · batch · connections flops instead of 2 · batch · n_out · n_in. Four connections
are taken at a time, so that an output row is loaded and stored once per four multiply-adds.
Weights stay dense tensors (the one source of truth for optimisers, targets and checkpoints);
the kernels read them at the connections. Members are chosen by index, so one call serves a
population, its twin critics, or every other member (an actor's loss through the first critics).

Measured on one AMD EPYC thread (``benchmarks/sparse_layer.py``), the three products of a
256x256 layer of two members at batch 100: 740 µs dense (sgemm), 190 µs at 10% density, 107 µs
at 5%, but 840 µs at 50%: sparse pays below about 40% of the connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from numba import njit
from torch import Tensor

# the sums over a batch may be reordered (vectorised); NaN and infinities propagate as usual
_FAST = {"nsz", "reassoc", "contract", "arcp"}


@dataclass(frozen=True)
class Connections:
    """Where a stacked layer (members, n_out, n_in) has connections, as CSR and CSC."""

    row_pointers: np.ndarray
    """(members · n_out + 1,) int64: row r = m · n_out + o spans ``columns[p[r]:p[r + 1]]``."""
    columns: np.ndarray
    """int32: the input of every connection, row after row."""
    column_pointers: np.ndarray
    """(members · n_in + 1,) int64: column c = m · n_in + i spans ``rows[q[c]:q[c + 1]]``."""
    rows: np.ndarray
    """int32: the output unit of every connection, column after column."""
    shape: tuple[int, int, int]
    """(members, n_out, n_in)."""

    @classmethod
    def of(cls, mask: Tensor) -> Connections:
        """The connections of a boolean mask (*members, n_out, n_in): any leading member
        dimensions, none included, as one."""
        mask = mask.detach().cpu().reshape(-1, *mask.shape[-2:])
        return cls(*_compressed(mask), *_compressed(mask.mT), tuple(mask.shape))

    @cached_property
    def member_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Per member, where its connections lie in its flattened (n_out · n_in) weight:
        pointers (members + 1,) into positions (int64), in row-major order."""
        _, n_out, n_in = self.shape
        units = np.repeat(np.arange(len(self.row_pointers) - 1), np.diff(self.row_pointers))
        positions = (units % n_out) * n_in + self.columns
        return self.row_pointers[::n_out].copy(), positions.astype(np.int64)


def _compressed(mask: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pointers and column indices of every row of a stacked mask, members in order."""
    flat = mask.reshape(-1, mask.shape[-1])
    pointers = torch.zeros(flat.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(flat.sum(dim=1), dim=0, out=pointers[1:])
    return pointers.numpy(), flat.nonzero()[:, 1].to(torch.int32).numpy()


_NO_GATE = np.empty((0, 0, 0), np.float32)  # an input gradient without a ReLU to undo
_NO_BIAS = np.empty((0, 0), np.float32)  # a weight gradient without the bias gradient


def load() -> None:
    """Compile (or load from Numba's cache) every kernel once, on a tiny layer: about half a
    second, paid when a network is built rather than at its first training step."""
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    c, members, x = Connections.of(mask), np.zeros(1, np.int64), torch.ones(1, 1, 1)
    weight, bias = torch.ones(1, 1, 1), torch.ones(1, 1)
    forward(weight, bias, c, members, x, relu=True)
    input_gradient(weight, c, members, x, None)
    weight_gradient(c, members, x, x, torch.zeros(1, 1, 1), bias=True)
    out = np.empty((1, 1, 2), np.float32)
    transpose(x.numpy(), out)  # contiguous, and strided (the gradient of a mean, say)
    transpose(x.expand(1, 2, 1).numpy(), out)


Array = np.ndarray | Tensor
"""A weight or bias operand: a CPU float32 tensor, or a numpy view of one (what a network keeps
for its layers, so that a pass does not pay for converting them)."""


def _array(t: Array) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else t.detach().numpy()


def _empty(*shape: int) -> tuple[Tensor, np.ndarray]:
    """An uninitialised float32 output as a tensor and a numpy view of it (allocated by numpy:
    half the cost of a tensor's ``new_empty`` and ``numpy``)."""
    array = np.empty(shape, np.float32)
    return torch.from_numpy(array), array


def forward(
    weight: Array,
    bias: Array,
    c: Connections,
    members: np.ndarray,
    x: Tensor,
    relu: bool = False,
) -> Tensor:
    """Y (E', n_out, B) = bias + W · x at the connections, for feature-major x (E', n_in, B);
    member e of x is member ``members[e]`` of the weights. With ``relu``, max(Y, 0) (NaN kept),
    in the same pass."""
    out, array = _empty(x.shape[0], weight.shape[1], x.shape[2])
    weight, bias = _array(weight), _array(bias)
    _forward(weight, bias, c.row_pointers, c.columns, members, x.numpy(), array, relu)
    return out


def input_gradient(
    weight: Array, c: Connections, members: np.ndarray, grad: Tensor, gate: Tensor | None
) -> Tensor:
    """Wᵀ · grad (E', n_in, B) at the connections; where ``gate`` (the layer's input, a ReLU
    output) is not positive the gradient is zero (the ReLU's backward, fused)."""
    out, array = _empty(grad.shape[0], weight.shape[2], grad.shape[2])
    _input_gradient(
        _array(weight),
        c.column_pointers,
        c.rows,
        members,
        grad.numpy(),
        _NO_GATE if gate is None else gate.numpy(),
        array,
    )
    return out


def weight_gradient(
    c: Connections,
    members: np.ndarray,
    x: Tensor,
    grad: Tensor,
    out: Tensor,
    bias: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """grad · xᵀ (E', n_out, n_in) at the connections, written into ``out``, whose entries
    elsewhere are left as they are (zero them once, and they stay zero); with ``bias``, also the
    bias gradient, grad summed over the batch (E', n_out), from the same reads of grad."""
    sums, array = _empty(*grad.shape[:2]) if bias else (None, _NO_BIAS)
    _weight_gradient(
        c.row_pointers, c.columns, members, x.numpy(), grad.numpy(), out.numpy(), array
    )
    return out, sums


@njit(cache=True, nogil=True)
def transpose(x, out):
    """out[e, i, j] = x[e, j, i], and 0 where j is past x's: the last two axes swapped, the new
    last one cut or padded with zeros to ``out``'s (feature-major activations and back)."""
    columns = min(out.shape[2], x.shape[1])  # out's rows never outnumber x's columns
    for e in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(columns):
                out[e, i, j] = x[e, j, i]
            out[e, i, columns:] = 0.0


@njit(nogil=True, fastmath=_FAST, error_model="numpy", inline="always")
def _gather(y, vectors, weights, index, start, end):
    """y += Σ weights[index[k]] · vectors[index[k]] over k in [start, end), four at a time."""
    batch = y.shape[0]
    k = start
    while k + 4 <= end:
        j0, j1, j2, j3 = index[k], index[k + 1], index[k + 2], index[k + 3]
        w0, w1, w2, w3 = weights[j0], weights[j1], weights[j2], weights[j3]
        v0, v1, v2, v3 = vectors[j0], vectors[j1], vectors[j2], vectors[j3]
        for t in range(batch):
            y[t] += w0 * v0[t] + w1 * v1[t] + w2 * v2[t] + w3 * v3[t]
        k += 4
    while k < end:
        j0 = index[k]
        w0 = weights[j0]
        v0 = vectors[j0]
        for t in range(batch):
            y[t] += w0 * v0[t]
        k += 1


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _forward(weight, bias, pointers, columns, members, x, out, relu):
    n_out = weight.shape[1]
    for e in range(members.shape[0]):
        m = members[e]
        for o in range(n_out):
            row = m * n_out + o
            y = out[e, o]
            y[:] = bias[m, o]
            _gather(y, x[e], weight[m, o], columns, pointers[row], pointers[row + 1])
            if relu:
                for t in range(y.shape[0]):
                    y[t] = np.float32(0.0) if y[t] < 0 else y[t]


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _input_gradient(weight, pointers, rows, members, grad, gate, out):
    n_in = weight.shape[2]
    gated = gate.shape[0] > 0
    for e in range(members.shape[0]):
        m = members[e]
        for i in range(n_in):
            column = m * n_in + i
            y = out[e, i]
            y[:] = 0.0
            _gather(y, grad[e], weight[m, :, i], rows, pointers[column], pointers[column + 1])
            if gated:
                a = gate[e, i]
                for t in range(y.shape[0]):
                    y[t] = y[t] if a[t] > 0 else np.float32(0.0)


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _weight_gradient(pointers, columns, members, x, grad, out, bias):
    n_out = out.shape[1]
    batch = x.shape[2]
    sums = bias.shape[0] > 0
    for e in range(members.shape[0]):
        m = members[e]
        xe = x[e]
        gw = out[e]
        for o in range(n_out):
            row = m * n_out + o
            g = grad[e, o]
            if sums:
                total = np.float32(0.0)
                for t in range(batch):
                    total += g[t]
                bias[e, o] = total
            k, end = pointers[row], pointers[row + 1]
            while k + 4 <= end:
                i0, i1, i2, i3 = columns[k], columns[k + 1], columns[k + 2], columns[k + 3]
                x0, x1, x2, x3 = xe[i0], xe[i1], xe[i2], xe[i3]
                s0 = s1 = s2 = s3 = np.float32(0.0)
                for t in range(batch):
                    gt = g[t]
                    s0 += gt * x0[t]
                    s1 += gt * x1[t]
                    s2 += gt * x2[t]
                    s3 += gt * x3[t]
                gw[o, i0], gw[o, i1], gw[o, i2], gw[o, i3] = s0, s1, s2, s3
                k += 4
            while k < end:
                i0 = columns[k]
                x0 = xe[i0]
                s0 = np.float32(0.0)
                for t in range(batch):
                    s0 += g[t] * x0[t]
                gw[o, i0] = s0
                k += 1
