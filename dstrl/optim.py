"""Adam with coupled (L2) weight decay, the update of ``torch.optim.Adam``, in one fused kernel.

Why not ``torch.optim.Adam`` itself: its state layout keeps a step tensor per parameter, and its
Python bookkeeping costs as much as the arithmetic at our network sizes. Here the step count is
one tensor per group, on the parameters' device and advanced there, so that a CUDA graph that
holds ``step`` advances it on every replay (checkpoints store it as an integer); and ``step`` is
a single call of the fused kernel that ``torch.optim.Adam(fused=True)`` uses: one pass over
parameters, gradients and moments, no temporaries. The unfused form cost about 4x as much on one
CPU thread, most of it in temporaries and in ``sqrt`` of the exact zeros every sparse layer has
(a slow path on x86).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


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
        self._counts = [self._count(group) for group in self.param_groups]

    @staticmethod
    def _count(group: dict) -> Tensor:
        """A group's step count as a float32 scalar on its parameters' device (the kernel's
        operand; exact to 2**24 steps)."""
        device = group["params"][0].device if group["params"] else None
        return torch.full((), float(group["step"]), device=device)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (the torch signature)
        if closure is not None:
            raise ValueError("this Adam does not take a closure")
        for group, step in zip(self.param_groups, self._counts, strict=True):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
            step.add_(1)  # the kernel reads (never writes) one count per parameter: share one
            beta1, beta2 = group["betas"]
            torch._fused_adam_(
                params,
                [p.grad for p in params],
                [self.state[p]["exp_avg"] for p in params],
                [self.state[p]["exp_avg_sq"] for p in params],
                [],
                [step] * len(params),
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                amsgrad=False,
                maximize=False,
            )
        return None

    # torch.optim.Optimizer wraps every subclass's step in a profiling range and its step hooks
    # (about 6 µs a call, two or three calls an update); a step marked as hooked is left as it is
    step.hooked = True

    def state_dict(self) -> dict:
        for group, step in zip(self.param_groups, self._counts, strict=True):
            group["step"] = int(step.item())  # a host read, at checkpoints only
        return super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for moments in self.state.values():  # their own memory, not the loaded checkpoint's
            for name, value in moments.items():
                if isinstance(value, Tensor):
                    moments[name] = value.clone()
        for group, step in zip(self.param_groups, self._counts, strict=True):
            step.fill_(float(group["step"]))  # in place: a captured graph keeps reading it


def clear_moments(
    optimizer: torch.optim.Optimizer | None, param: Tensor, positions: Tensor
) -> None:
    """Zero ``param``'s moments at ``positions`` (bool, broadcast to its shape): a connection or
    unit that starts afresh must not inherit the momentum of what was there before."""
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.masked_fill_(positions, 0.0)
