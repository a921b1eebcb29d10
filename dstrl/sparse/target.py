"""Keep a Polyak-averaged target network as sparse as its online network.

``θ' ← τθ + (1-τ)θ'`` mixes the online support into the target, so after a topology change the
target would gain connections. Three options:
- ``magnitude``: prune each target layer back to the online layer's connection count, keeping
  the largest ``|θ'|`` (what the DS-TD3 release does);
- ``online-mask``: multiply the target by the online mask;
- ``dense``: leave the target alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from dstrl.sparse.compute import LayerKernel, support_changed
from dstrl.sparse.engine import MaskedLayers
from dstrl.sparse.kernels import Connections
from dstrl.sparse.kinds import TARGET_MODES, TargetMode
from dstrl.sparse.target_cpu import prune_layers


class _Blocks:
    """A row-wise view of a tensor cut into blocks, with each block's max or min: the top k of
    a row lie in the k blocks with the most extreme values, so a top-k runs over k blocks
    instead of the whole row."""

    def __init__(self, values: Tensor, largest: bool) -> None:
        rows, n = values.shape
        self.size, self.largest = math.gcd(n, 64), largest
        self.blocks = values.view(rows, n // self.size, self.size)
        self.extreme = self.blocks.amax(dim=2) if largest else self.blocks.amin(dim=2)

    def top(self, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` most extreme entries of each row, sorted, and their indices."""
        rows, count, size = self.blocks.shape
        chosen = self.extreme.topk(min(k, count), dim=1, largest=self.largest).indices
        candidates = self.blocks.gather(1, chosen.unsqueeze(2).expand(-1, -1, size))
        top, local = candidates.view(rows, -1).topk(k, dim=1, largest=self.largest)
        return top, chosen.gather(1, local // size) * size + local % size


@torch.no_grad()
def prune_to_count(
    targets: list[Tensor],
    outsides: list[Tensor],
    listed: list[Connections | None] | None = None,
) -> bool:
    """After a Polyak step, keep per layer and member the largest-magnitude entries of the
    target, as many as it had connections before the step; ``outsides`` (bool, one per layer)
    mark the positions that were not connections. Both are updated in place. Returns whether any
    challenger (a nonzero entry outside the connections) had entered.

    CPU float32 tensors (``compiled``): one call of a Numba kernel (``target_cpu``) does every
    layer. ``listed`` may give, per layer, positions that hold every connection and every
    nonzero entry: the kernel then reads those alone. Other devices: ``prune_to_count_tensor``.
    """
    if not targets:
        return False
    return bool(prune_layers(*_operands(targets, outsides, listed)))


def _operands(
    targets: list[Tensor], outsides: list[Tensor], listed: list[Connections | None] | None
) -> tuple:
    """``prune_layers``' operands: numpy views of the layers, one row per member, and the
    listed positions (empty where a layer is read whole)."""
    rows = [(-1, t.shape[-2] * t.shape[-1]) for t in targets]
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    lists = [empty if c is None else c.member_positions for c in listed or [None] * len(rows)]
    return (
        tuple(t.detach().view(r).numpy() for t, r in zip(targets, rows, strict=True)),
        tuple(o.view(r).numpy() for o, r in zip(outsides, rows, strict=True)),
        tuple(pointers for pointers, _ in lists),
        tuple(positions for _, positions in lists),
    )


def compiled(target: Tensor, outside: Tensor) -> bool:
    """Whether ``prune_to_count``'s compiled kernel takes this layer."""
    return (
        target.device.type == "cpu"
        and target.dtype == torch.float32
        and outside.dtype == torch.bool
        and target.is_contiguous()
        and outside.is_contiguous()
    )


@torch.no_grad()
def prune_to_count_tensor(target: Tensor, outside: Tensor, most: int) -> None:
    """``prune_to_count`` for one layer in tensor operations (any device), with no host read
    and no data-dependent branch, so that a CUDA graph can hold it and the host never waits.

    ``most`` (known on the host) bounds the challengers (nonzero entries outside the
    connections) of every row. Keeping the top k of the union is then a merge of fixed size:
    the j-th largest challenger replaces the j-th smallest connection for as long as it is
    larger, j < ``most``. Both ends come from a blocked top-k.
    """
    if most == 0:
        return
    flat = target.view(-1, target.shape[-2] * target.shape[-1])
    out = outside.view(flat.shape).to(flat.dtype)  # 0/1 floats (boolean kernels are slower)
    magnitude = flat.abs()
    k = min(most, flat.shape[1])
    entering, entering_at = _Blocks(magnitude * out, largest=True).top(k)  # challengers' |θ'|
    # connections' magnitudes; every other entry is pushed beyond any challenger
    beyond = torch.add(magnitude, out, alpha=torch.finfo(flat.dtype).max / 2)
    leaving, leaving_at = _Blocks(beyond, largest=False).top(k)
    swap = (entering > leaving).to(flat.dtype)  # a prefix of each row
    # out is 0/1 (1: not a connection): a challenger that swaps takes min(out, 1 - swap) = 0,
    # a connection that swaps max(out, swap) = 1; one operation each, with no gather
    out.scatter_reduce_(1, entering_at, 1 - swap, reduce="amin")
    out.scatter_reduce_(1, leaving_at, swap, reduce="amax")
    flat.addcmul_(flat, out, value=-1.0)  # zero the replaced and every challenger that lost
    outside.copy_(out.view(outside.shape) != 0)


class _PaddedRows:
    """The member rows of several layers, one padded (rows, length) copy, so that one
    ``prune_to_count_tensor`` prunes them all: a GPU launches the merge's thirty-odd operations
    once per network, not once per layer. Padding is zero and outside the connections, so it
    never enters and never leaves."""

    def __init__(self, targets: list[Tensor]) -> None:
        sizes = [t.shape[-2] * t.shape[-1] for t in targets]
        rows = [t.numel() // n for t, n in zip(targets, sizes, strict=True)]
        starts = [sum(rows[:i]) for i in range(len(rows))]
        self.places = list(zip(starts, rows, sizes, strict=True))
        self.values = targets[0].new_zeros(sum(rows), 1, max(sizes))
        self.outside = torch.ones(self.values.shape, dtype=torch.bool, device=targets[0].device)

    @torch.no_grad()
    def prune(self, targets: list[Tensor], outsides: list[Tensor], most: int) -> None:
        for (start, rows, n), target, outside in zip(self.places, targets, outsides, strict=True):
            self.values[start : start + rows, 0, :n].copy_(target.view(rows, n))
            self.outside[start : start + rows, 0, :n].copy_(outside.view(rows, n))
        prune_to_count_tensor(self.values, self.outside, most)
        for (start, rows, n), target, outside in zip(self.places, targets, outsides, strict=True):
            target.view(rows, n).copy_(self.values[start : start + rows, 0, :n])
            outside.view(rows, n).copy_(self.outside[start : start + rows, 0, :n])


class SparseTarget:
    """The sparse layers of a target network, kept at the sparsity of the online ``layers``.

    The online masks are read live, so topology updates are seen. Call ``after_polyak`` after
    every soft update, and ``follow`` after anything that changes the online masks: it does the
    host's part once per change, so that ``after_polyak`` itself never reads the device (off
    the CPU). A target whose connections cover every online connection cannot gain any; it is
    skipped until the online topology changes again (static sparsity: always).
    """

    def __init__(self, targets: list[Tensor], layers: MaskedLayers, mode: TargetMode) -> None:
        if mode not in TARGET_MODES:
            raise ValueError(f"unknown target sparsity {mode!r}; choose one of {TARGET_MODES}")
        self.targets, self.layers, self.mode = targets, layers, mode
        self.outside = [f == 0 for f in layers.factors]  # positions that are not connections
        self.compiled = all(compiled(t, o) for t, o in zip(targets, self.outside, strict=True))
        self._covered_at: int | None = None  # online version whose masks the connections cover
        self._loads = 0  # supports loaded from a checkpoint (they may differ from any derived)
        self._followed: tuple[int, int] | None = None  # what ``follow`` last saw
        self._most = [0] * len(targets)  # challengers per row, at most (tensor pruning)
        self._operands: tuple = ()  # the compiled pruner's, and the topology they are of
        self._operands_for: tuple[int, int] | None = None
        # every layer's rows in one buffer, for tensor pruning; allocated here, never inside a
        # captured graph
        self._padded = None if self.compiled or len(targets) < 2 else _PaddedRows(targets)
        self.follow()
        if mode == "magnitude" and self.compiled:  # nothing outside the connections yet:
            prune_to_count(targets, self.outside)  # this only loads the kernel
        # Within one online topology a target can become nonzero, or a connection, only at
        # online connections: a Polyak step brings in nothing else, pruning only swaps those in,
        # masking only removes. So its connections (magnitude) or nonzero entries (online-mask)
        # with the online connections, taken once per topology (or load), cover it until the
        # topology changes; pruning then reads those positions alone.
        self._kernels = [
            LayerKernel(
                target,
                lambda i=i, target=target: (
                    layers.masks[i] | (~self.outside[i] if mode == "magnitude" else target != 0)
                ),
                lambda: (self.layers.version, self._loads),
                lambda i=i: layers.planned[i],  # the online count, so the same density
                layers.kernel_choice,
            )
            for i, target in enumerate(targets)
        ]

    def kernels(self) -> dict[int, LayerKernel]:
        """How each sparse layer of the target network is computed (``use_kernels``)."""
        if self.mode == "dense":
            return {}
        return dict(zip(self.layers.indices, self._kernels, strict=True))

    def follow(self) -> None:
        """Catch up with a change of the online masks (or a load), once per change: where a
        rule changed the connection count (pruning), the target takes the online mask and
        prunes to the new count from here on; and off the CPU, a bound on the challengers for
        the fixed-size merge of ``prune_to_count_tensor``."""
        seen = (self.layers.version, self._loads)
        if self.mode == "magnitude" and self._followed != seen:
            self._catch_up(seen)  # a check alone otherwise: called at every update

    @torch.no_grad()
    def _catch_up(self, seen: tuple[int, int]) -> None:
        self._followed = seen
        pairs = list(zip(self.targets, self.outside, self.layers.factors, strict=True))
        for target, outside, factor in pairs:
            if int(outside.numel() - outside.sum()) != int(factor.sum()):
                outside.copy_(factor == 0)
                target.mul_(factor)
        if not self.compiled:
            # Challengers are online connections outside the target's connections: as many
            # as target connections outside the online ones, which only leave until the next
            # change. So today's count bounds every step's.
            # Rounded up to a power of two, so that a captured graph that holds the merge
            # serves many topology changes (a larger bound keeps the same connections).
            stale = [(~o & (f == 0)).flatten(1).sum(dim=1).amax() for _, o, f in pairs]
            counts = torch.stack(stale).tolist()
            self._most = [1 << (m - 1).bit_length() if m else 0 for m in counts]
            if not any(self._most):
                self._covered_at = self.layers.version

    def graph_key(self) -> tuple:
        """What ``after_polyak`` does beyond tensor contents, once ``follow`` has caught up:
        whether it prunes, and the bounds of its merges."""
        return (self.mode, self._covered_at == self.layers.version, tuple(self._most))

    def after_polyak(self) -> None:
        if self.mode == "dense" or not self.targets:
            return
        self.follow()  # a no-op unless the masks changed without a call
        if self.mode == "magnitude" and self._covered_at == self.layers.version:
            return
        if self.mode == "magnitude" and self.compiled:  # numpy views: no autograd to stop
            entered = prune_layers(*self._compiled_operands())
            if not entered:  # no longer settling after a topology change
                self._check_covered()
            return
        self._prune_tensors()

    @torch.no_grad()
    def _prune_tensors(self) -> None:
        if self.mode == "online-mask":
            torch._foreach_mul_(self.targets, self.layers.factors)
        elif len(self.targets) == 1:
            prune_to_count_tensor(self.targets[0], self.outside[0], self._most[0])
        else:
            self._padded.prune(self.targets, self.outside, max(self._most))

    @torch.no_grad()
    def _check_covered(self) -> None:
        uncovered = [(f * o).any() for f, o in zip(self.layers.factors, self.outside, strict=True)]
        if not bool(torch.stack(uncovered).any()):
            self._covered_at = self.layers.version

    def _compiled_operands(self) -> tuple:
        """The compiled pruner's operands, taken once per online topology (or load): the
        layers' arrays are views of the targets, and the positions each layer's kernel reads
        change with the topology alone. About 12 µs a call less than ``prune_to_count``."""
        seen = (self.layers.version, self._loads)
        if self._operands_for != seen:
            listed = [kernel.connections() for kernel in self._kernels]
            self._operands = _operands(self.targets, self.outside, listed)
            self._operands_for = seen
        return self._operands

    def state_dict(self) -> dict:
        """The connections, and the positions each layer's kernel reads (empty: none yet)."""
        reads = [k.read_support() for k in self._kernels]
        return {
            "outside": [o.cpu() for o in self.outside],
            "reads": [torch.zeros(0, dtype=torch.bool) if r is None else r.cpu() for r in reads],
        }

    def load_state_dict(self, state: dict) -> None:
        for outside, saved in zip(self.outside, state["outside"], strict=True):
            outside.copy_(saved)
        reads = state.get("reads")  # absent before the sparse kernels: choose afresh
        for kernel, read, target in zip(self._kernels, reads or [], self.targets, strict=False):
            if read.numel():
                kernel.pin(read.to(target.device, copy=True))  # not the checkpoint's memory
        self._loads += 1
        support_changed()  # the kernels' version includes the loads
        self._covered_at = None
