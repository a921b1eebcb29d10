"""Adam with coupled (L2) weight decay, the update of ``torch.optim.Adam``, in a few foreach ops.

Why not ``torch.optim.Adam``: on x86 CPU builds of PyTorch, ``sqrt`` of an exact zero takes a
slow path (about 10x slower per element, measured on PyTorch 2.13). A sparse layer has an exactly
zero second moment at every inactive connection, so the stock step costs twice as much for a
sparse network as for a dense one. Here the denominator is ``sqrt(v + 1e-30) / sqrt(1 - β2^t) + ε``;
the shift is 22 orders of magnitude below ε² and changes no update measurably.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

SQRT_SHIFT = 1e-30


class Adam(torch.optim.Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as ``torch.optim.Adam``.

    State per parameter: ``exp_avg`` and ``exp_avg_sq`` (shaped like the parameter, so that
    topology updates can clear entries) and the shared step count of its group.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"invalid Adam settings lr={lr} betas={betas} eps={eps} wd={weight_decay}"
            )
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, step=0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (the torch signature)
        if closure is not None:
            raise ValueError("this Adam does not take a closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
            exp_avg = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
            group["step"] += 1
            beta1, beta2 = group["betas"]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_add(exp_avg_sq, SQRT_SHIFT)
            torch._foreach_sqrt_(denom)
            torch._foreach_div_(denom, (1 - beta2 ** group["step"]) ** 0.5)
            torch._foreach_add_(denom, group["eps"])
            step_size = group["lr"] / (1 - beta1 ** group["step"])
            torch._foreach_addcdiv_(params, exp_avg, denom, value=-step_size)
        return None
