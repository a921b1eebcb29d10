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


def _top_indices(score: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest entries of each row, via the ``k`` blocks with the largest
    maxima: the top k of a row lie in those blocks, so the final top-k runs over k blocks
    instead of the whole row (several times faster when k is small against the row)."""
    rows, n = score.shape
    size = math.gcd(n, 64)
    blocks = score.view(rows, n // size, size)
    chosen = blocks.amax(dim=2).topk(min(k, n // size), dim=1).indices  # (rows, blocks)
    candidates = blocks.gather(1, chosen.unsqueeze(2).expand(-1, -1, size)).view(rows, -1)
    local = candidates.topk(k, dim=1).indices
    return chosen.gather(1, local // size) * size + local % size


@torch.no_grad()
def prune_to_count(target: Tensor, support: Tensor) -> bool:
    """After a Polyak step, keep per member the largest-magnitude entries of ``target``, as many
    as ``support`` (0/1 floats: the target's connections before the step) holds; both in place.

    Exact, and cheap: only entries outside ``support`` (challengers: online connections the
    target did not have) can have entered. A supported entry larger than every challenger is
    certainly kept, so the selection runs over the pool of challengers and the few supported
    entries below the largest challenger, keeping as many of the pool as there are such
    supported entries. Float arithmetic only: boolean kernels are many times slower on CPU.
    Returns whether any challenger had entered.
    """
    flat = target.view(-1, target.shape[-2] * target.shape[-1])
    keep = support.view(flat.shape)
    magnitude = flat.abs()
    challenger = torch.addcmul(magnitude, magnitude, keep, value=-1.0)
    bound = challenger.amax(dim=1, keepdim=True)
    if not bool(bound.any()):
        return False  # nothing entered
    # 1 where a supported entry lies under the bound (sign of a clamped difference: float ops)
    below = (bound - magnitude).clamp_min_(0.0).mul_(keep).sign_()
    contested = below.sum(dim=1)
    most = int(contested.max())
    if most == 0:  # every challenger is smaller than every supported entry
        flat.mul_(keep)
        return True
    entered = challenger.sign_()
    pool = entered.add(below)  # challengers and contested entries
    best = _top_indices(torch.addcmul(pool - 1, magnitude, pool), most)  # others score -1
    rank = torch.arange(most, device=flat.device, dtype=flat.dtype)
    kept = torch.zeros_like(pool).scatter_(1, best, (rank < contested.unsqueeze(1)).to(flat.dtype))
    removed = pool.sub_(kept)
    flat.addcmul_(flat, removed, value=-1.0)
    keep.add_(entered).sub_(removed)
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
