"""How a sparse layer is computed: masked dense, or kernels that touch only its connections.

The choice is the core's, per layer, and is made again whenever the layer's connections change
(a topology update, gradual pruning, a resume): with ``auto``, a layer on the CPU whose density
is at most ``SPARSE_BELOW`` runs the kernels of ``dstrl.sparse.kernels``, every other layer a
dense product of its masked weights. Both give the same numbers up to float32 rounding (tested
in tests/test_sparse_kernels.py). Networks ask ``LayerKernel.connections()`` again whenever
``changes()`` has moved; agents never see which path ran.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import cache

import torch
from torch import Tensor

from dstrl.sparse import kernels
from dstrl.sparse.kernels import Connections
from dstrl.sparse.kinds import KERNEL_CHOICES, KernelChoice

SPARSE_BELOW = 0.3
"""Density at or under which ``auto`` computes a layer by its connections. On one CPU thread the
three products of a 256x256 layer at batch 100 cost 0.25x sgemm's time at 10% density, 0.56x at
25% and 1.15x at 50% (``benchmarks/sparse_layer.py``, AMD EPYC)."""


_changes = 0


def support_changed() -> None:
    """Record that some layer's support or planned density may have changed: called by
    whatever changes a ``LayerKernel``'s ``version``."""
    global _changes
    _changes += 1


def changes() -> int:
    """How many times supports have changed in this process: while it stands still, every
    kernel's choice stands, so a network reuses its plan (asking each kernel costs about a
    microsecond a pass, several passes an update)."""
    return _changes


class LayerKernel:
    """The computation of one stacked sparse layer, kept current with its connections.

    ``support`` gives the positions that may be nonzero (bool, the weight's shape), ``version``
    a value that changes whenever the support may have changed (each change with a call of
    ``support_changed``), and ``density`` the layer's planned density, which ``auto`` chooses
    by: a plan, not the masks, so that no member's state (a halted member's frozen mask, say)
    changes how the others are computed. ``keep_inputs`` (rules that grow by gradient) keeps
    the last weight gradient's factors so that the dense gradient can still be formed at a
    topology update.
    """

    def __init__(
        self,
        weight: Tensor,
        support: Callable[[], Tensor],
        version: Callable[[], Hashable],
        density: Callable[[], float],
        choice: KernelChoice = "auto",
        keep_inputs: bool = False,
    ) -> None:
        if choice not in KERNEL_CHOICES:
            raise ValueError(f"unknown sparse kernels {choice!r}; choose one of {KERNEL_CHOICES}")
        compiled = weight.device.type == "cpu" and weight.dtype == torch.float32
        if choice == "sparse" and not compiled:
            raise ValueError(
                f"sparse kernels run on float32 CPU weights, not {weight.dtype} on "
                f"{weight.device.type}: use auto or masked"
            )
        self.choice = choice if compiled else "masked"
        if self.choice != "masked":
            _load_kernels()
        self.keep_inputs = keep_inputs
        self.used = False  # set by the network that computes the layer as this says
        self.saved: tuple[Tensor, Tensor] | None = None  # (output gradient, input), feature-major
        self._support, self._version, self._density = support, version, density
        self._built_for: Hashable = object()  # never equal to a version
        self._connections: Connections | None = None
        self._read: Tensor | None = None  # the support the connections were taken from
        self._pinned: Tensor | None = None  # a support to take at the next rebuild
        self._gradient: Tensor | None = None  # zero outside the connections

    def connections(self) -> Connections | None:
        """The layer's connections if it runs the sparse kernels now, else None (masked dense)."""
        version = self._version()
        if version != self._built_for:
            self._built_for = version
            self._connections = self._build()
            self.saved = None
            self._gradient = None
        return self._connections

    def gradient_buffer(self, like: Tensor) -> Tensor:
        """A weight-gradient tensor shaped like ``like`` that is zero outside the connections,
        reused from pass to pass: only the connections are written, so it stays so, and no pass
        pays for a fresh zeroed tensor. The caller must be done with the previous pass's."""
        if self._gradient is None or self._gradient.shape != like.shape:
            self._gradient = torch.zeros_like(like)
        return self._gradient

    def _build(self) -> Connections | None:
        support, self._pinned, self._read = self._pinned, None, None
        if self.choice == "masked" or (self.choice == "auto" and self._density() > SPARSE_BELOW):
            return None
        self._read = self._support() if support is None else support
        return Connections.of(self._read)

    def read_support(self) -> Tensor | None:
        """The positions the layer reads by its connections now, if it does and has read them
        since its support last changed (else None: it will read them at its next pass)."""
        return self._read if self._built_for == self._version() else None

    def pin(self, support: Tensor) -> None:
        """Read ``support`` at the next rebuild, so that a resumed run computes as it did before
        the stop: a support wider than the nonzero weights changes the order, so the rounding,
        of the sums."""
        self._pinned = support

    def dense_gradient(self) -> Tensor:
        """The weight gradient at every position, connected or not, of the last backward pass
        that computed this layer's weight gradient by its connections."""
        if self.saved is None:
            raise RuntimeError("no weight gradient was computed by this layer's connections")
        grad, x = self.saved
        return torch.bmm(grad, x.mT)


@cache
def _load_kernels() -> None:
    """Compile the kernels once per process, when the first layer that may use them is built."""
    kernels.load()
