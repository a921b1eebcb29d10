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
from typing import Literal

import torch
from torch import Tensor

from dstrl.sparse.engine import MaskedLayers

TargetMode = Literal["magnitude", "online-mask", "dense"]
TARGET_MODES: tuple[str, ...] = ("magnitude", "online-mask", "dense")


def _block_top(values: Tensor, k: int, largest: bool) -> tuple[Tensor, Tensor]:
    """The ``k`` largest (or smallest) entries of each row, sorted, with their indices.

    The row is cut into blocks: the top k lie in the k blocks with the most extreme block
    values, so the final top-k runs over k blocks instead of the whole row.
    """
    rows, n = values.shape
    size = math.gcd(n, 64)
    blocks = values.view(rows, n // size, size)
    extreme = blocks.amax(dim=2) if largest else blocks.amin(dim=2)
    chosen = extreme.topk(min(k, n // size), dim=1, largest=largest).indices
    candidates = blocks.gather(1, chosen.unsqueeze(2).expand(-1, -1, size)).view(rows, -1)
    top, local = candidates.topk(k, dim=1, largest=largest)
    return top, chosen.gather(1, local // size) * size + local % size


@torch.no_grad()
def prune_to_count(target: Tensor, support: Tensor) -> bool:
    """After a Polyak step, keep per member the largest-magnitude entries of ``target``, as many
    as ``support`` (0/1 floats: the target's connections before the step) holds; both in place.

    Exact, and cheap. Only entries outside ``support`` (challengers: online connections the
    target did not have) can have entered, so keeping the top k of the union is a merge: the
    j-th largest challenger replaces the j-th smallest supported entry for as long as it is
    larger. Both ends come from a blocked top-k of a few entries (doubled until the merge stops
    inside it); the full-size work is a handful of float passes (boolean kernels are many times
    slower on CPU). Returns whether any challenger had entered.
    """
    flat = target.view(-1, target.shape[-2] * target.shape[-1])
    keep = support.view(flat.shape)
    magnitude = flat.abs()
    challenger = torch.addcmul(magnitude, magnitude, keep, value=-1.0)  # |θ'| outside support
    largest = challenger.amax(dim=1)
    if not bool(largest.any()):
        return False  # nothing entered
    # supported magnitudes; every other entry is pushed beyond any challenger
    supported = torch.add(magnitude, 1.0 - keep, alpha=torch.finfo(flat.dtype).max / 2)
    if not bool((largest > supported.amin(dim=1)).any()):
        flat.mul_(keep)  # no challenger beats the smallest connection: all of them leave
        return True
    k, n = min(16, flat.shape[1]), flat.shape[1]
    while True:
        entering, entering_at = _block_top(challenger, k, largest=True)
        leaving, leaving_at = _block_top(supported, k, largest=False)
        swap = (entering > leaving).to(flat.dtype)  # a prefix of each row
        if k == n or not bool(swap[:, -1].any()):
            break
        k = min(2 * k, n)
    keep.scatter_(1, entering_at, keep.gather(1, entering_at).maximum(swap))
    keep.scatter_(1, leaving_at, keep.gather(1, leaving_at) * (1 - swap))
    flat.mul_(keep)  # zeroes the replaced entries and every challenger that did not enter
    return True


class SparseTarget:
    """The sparse layers of a target network, kept at the sparsity of the online ``layers``.

    The online masks are read live, so topology updates are seen. Call ``after_polyak`` after
    every soft update. A target whose connections cover every online connection cannot gain
    any; it is skipped until the online topology changes again (static sparsity: always).
    """

    def __init__(self, targets: list[Tensor], layers: MaskedLayers, mode: TargetMode) -> None:
        if mode not in TARGET_MODES:
            raise ValueError(f"unknown target sparsity {mode!r}; choose one of {TARGET_MODES}")
        self.targets, self.layers, self.mode = targets, layers, mode
        self.supports = [f.clone() for f in layers.factors]
        self._covered_at: int | None = None  # online version whose masks the supports cover

    @torch.no_grad()
    def after_polyak(self) -> None:
        if self.mode == "dense":
            return
        if self.mode == "online-mask":
            torch._foreach_mul_(self.targets, self.layers.factors)
            return
        if self._covered_at == self.layers.version or not self.targets:
            return
        entered = [prune_to_count(t, s) for t, s in zip(self.targets, self.supports, strict=True)]
        if any(entered):
            return  # still settling after a topology change
        uncovered = [
            torch.addcmul(f, f, s, value=-1.0).any()
            for f, s in zip(self.layers.factors, self.supports, strict=True)
        ]
        if not bool(torch.stack(uncovered).any()):
            self._covered_at = self.layers.version

    def state_dict(self) -> dict:
        return {"supports": [s.cpu() for s in self.supports]}

    def load_state_dict(self, state: dict) -> None:
        for support, saved in zip(self.supports, state["supports"], strict=True):
            support.copy_(saved)
        self._covered_at = None
