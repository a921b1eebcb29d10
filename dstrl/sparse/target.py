"""Keep a Polyak-averaged target network as sparse as its online network.

``θ' ← τθ + (1-τ)θ'`` mixes the online support into the target, so after a topology change the
target would gain connections. Three options:
- ``magnitude``: prune each target layer back to the online layer's connection count, keeping
  the largest ``|θ'|`` (what the DS-TD3 release does);
- ``online-mask``: multiply the target by the online mask;
- ``dense``: leave the target alone.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from dstrl.sparse.engine import MaskedLayers

TargetMode = Literal["magnitude", "online-mask", "dense"]
TARGET_MODES: tuple[str, ...] = ("magnitude", "online-mask", "dense")


@torch.no_grad()
def prune_to_count(target: Tensor, support: Tensor) -> None:
    """After a Polyak step, keep per member the largest-magnitude entries of ``target``, as many
    as ``support`` (0/1 floats: the target's connections before the step) holds; both in place.

    Exact, and cheap: only entries outside ``support`` (challengers: online connections the
    target did not have) can have entered. A supported entry larger than every challenger is
    certainly kept, so the selection runs over the pool of challengers and the few supported
    entries below the largest challenger, keeping as many of the pool as there are such
    supported entries. Float arithmetic only: boolean kernels are many times slower on CPU.
    """
    flat = target.view(-1, target.shape[-2] * target.shape[-1])
    keep = support.view(flat.shape)
    magnitude = flat.abs()
    challenger = torch.addcmul(magnitude, magnitude, keep, value=-1.0)
    bound = challenger.amax(dim=1, keepdim=True)
    if not bool(bound.any()):
        return  # nothing entered: the common case between topology updates
    below = (bound - magnitude).clamp_min_(0.0).mul_(keep)  # > 0: supported, under the bound
    contested = torch.count_nonzero(below, dim=1)
    most = int(contested.max())
    if most == 0:  # every challenger is smaller than every supported entry
        flat.mul_(keep)
        return
    entered = challenger.sign_()
    pool = entered + below.sign_()
    best = torch.addcmul(pool - 1, magnitude, pool).topk(most, dim=1).indices  # others: -1
    kept = torch.zeros_like(pool).scatter_(
        1, best, (torch.arange(most, device=flat.device) < contested.unsqueeze(1)).to(pool.dtype)
    )
    removed = pool.sub_(kept)
    flat.addcmul_(flat, removed, value=-1.0)
    keep.add_(entered).sub_(removed)


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
        for target, support in zip(self.targets, self.supports, strict=True):
            prune_to_count(target, support)
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
