"""Keep one network's sparse weights, masks and optimiser state consistent.

Contract (tested in tests/test_sparse_invariants.py):
- inactive weights are exactly zero after ``apply_masks`` and after every optimiser step that
  follows ``mask_gradients``: their gradient is zero, and so is their (coupled) weight decay;
- a prune-and-grow update keeps the number of active connections of every layer and member
  (gradual pruning only removes, down to its schedule);
- a grown connection starts at weight 0, and Adam's moments are zeroed at every grown and
  every dropped position, so a regrown connection starts fresh and a dropped one cannot drift;
- the masks of frozen members (``freeze``) never change, and no member's topology depends on
  another member's weights;
- ``redraw_rows`` moves a row's (a unit's incoming) connections to random positions and keeps
  every row's count, so recycling a neuron stays within the layer's connection budget;
- whether a layer is computed masked-dense or by its connections (``kernels``) changes no
  number beyond float32 rounding, and every topology change reaches the kernels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from dstrl.optim import clear_moments
from dstrl.sparse.compute import KernelChoice, LayerKernel, support_changed
from dstrl.sparse.masking_cpu import zero_inactive
from dstrl.sparse.pruning import GradualPruning
from dstrl.sparse.schedule import TopologySchedule
from dstrl.sparse.topology import SET, lowest

Rule = SET | GradualPruning
_Selected = tuple[nn.Parameter, np.ndarray, Tensor]  # a weight, its mask's numpy view, factor


def compiled(weight: Tensor, mask: Tensor) -> bool:
    """Whether the gradients of this layer are masked by the compiled select (``zero_inactive``)
    rather than a multiply: float32 CPU weights."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and mask.is_contiguous()


class MaskedLayers:
    """The sparse layers of one network (weights shaped (*members, n_out, n_in)) and their masks.

    ``rule=None`` gives a static topology (masks never change). ``indices`` say which of the
    network's layers the weights are (default: the first ones, in order). ``kernels`` chooses
    how the layers are computed (``dstrl.sparse.compute``).
    """

    def __init__(
        self,
        weights: list[nn.Parameter],
        masks: list[Tensor],
        rule: Rule | None = None,
        schedule: TopologySchedule | None = None,
        generator: torch.Generator | None = None,
        indices: list[int] | None = None,
        kernels: KernelChoice = "auto",
        group: int | None = None,
    ) -> None:
        if len(weights) != len(masks):
            raise ValueError("one mask per sparse weight is required")
        for w, m in zip(weights, masks, strict=True):
            if w.shape != m.shape or m.dtype != torch.bool:
                raise ValueError(f"mask must be boolean with the weight's shape {tuple(w.shape)}")
        if rule is not None and (schedule is None or generator is None):
            raise ValueError("a topology rule needs a schedule and a random generator")
        self.weights = weights
        self.indices = list(range(len(weights))) if indices is None else indices
        self.masks = [m.to(w.device) for w, m in zip(weights, masks, strict=True)]
        self._factors = [m.to(w.dtype) for w, m in zip(weights, self.masks, strict=True)]
        self.rule = rule
        # with N:M masks, M: a redrawn row keeps N in each group of M (static masks: no rule)
        self.group = group if group is not None else getattr(rule, "group", None)
        self.schedule = schedule
        self.generator = generator
        self.optimizer: torch.optim.Optimizer | None = None
        self._version = 0
        self.frozen: Tensor | None = None  # (members,) bool: members whose masks stay as they are
        self._dense_gradients: list[Tensor] | None = None  # for rules that grow by gradient
        self._masked: tuple[list[_Selected], list[tuple[nn.Parameter, Tensor]]] = ([], [])
        # float32 CPU weights have their gradients masked by a compiled select (loaded here)
        self._compiled = [compiled(w, m) for w, m in zip(weights, self.masks, strict=True)]
        if any(self._compiled):
            zero_inactive(np.zeros(1, np.float32), np.zeros(1, np.bool_))
        self._masked_for: int | None = None
        # each layer's density as planned (by the configuration and the rule's schedule, never
        # by a member's weights): what the choice of kernels goes by. It is the mean over the
        # stacked members, dense ones of a mixed population included: one kernel computes them
        # all, and its cost follows the connections of the whole stack
        self.planned = [m.float().mean().item() for m in self.masks]
        self.kernel_choice = kernels
        grows_by_gradient = rule is not None and rule.needs_gradients
        self._kernels = [
            LayerKernel(
                w,
                lambda m=m: m,
                lambda: self.version,
                lambda i=i: self.planned[i],
                kernels,
                grows_by_gradient,
            )
            for i, (w, m) in enumerate(zip(self.weights, self.masks, strict=True))
        ]

    @property
    def version(self) -> int:
        """Incremented by every change of the masks or the planned densities."""
        return self._version

    @version.setter
    def version(self, value: int) -> None:
        self._version = value
        support_changed()  # the layers' kernels read the version: networks must ask again

    def kernels(self) -> dict[int, LayerKernel]:
        """How each sparse layer is computed, by its index in the network (``use_kernels``)."""
        return dict(zip(self.indices, self._kernels, strict=True))

    def freeze(self, members: Tensor) -> None:
        """From now on, keep the masks of ``members`` (bool, one per leading index, flattened)
        as they are: topology updates leave them out."""
        members = members.to(self.masks[0].device) if self.masks else members
        self.frozen = members if self.frozen is None else self.frozen | members

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Register the optimiser whose per-weight state must follow topology changes."""
        self.optimizer = optimizer

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every inactive weight."""
        if self.weights:  # a network may have no sparse layer (ER caps every density at 1)
            torch._foreach_mul_(self.weights, self._factors)

    def mask_gradients(self, step: int | None = None) -> None:  # gradients have no history
        """Zero the gradient of every inactive weight (call between backward and step).

        At a topology-update ``step`` of a rule that grows by gradient, the dense gradient is
        kept first: the only steps that pay for a copy of it.
        """
        if step is not None and self.keeps_gradients(step):
            self._dense_gradients = [
                k.dense_gradient() if self._by_connections(k) else w.grad.detach().clone()
                for w, k in zip(self.weights, self._kernels, strict=True)
            ]
        selected, multiplied = self._masked_dense()
        for weight, mask, factor in selected:
            grad = weight.grad
            if grad is not None and grad.is_contiguous():
                zero_inactive(grad.numpy(), mask)
            elif grad is not None:
                grad.mul_(factor)
        pairs = [(w.grad, f) for w, f in multiplied if w.grad is not None]
        if pairs:
            torch._foreach_mul_(*map(list, zip(*pairs, strict=True)))

    def _masked_dense(self) -> tuple[list[_Selected], list[tuple[nn.Parameter, Tensor]]]:
        """The layers whose gradient is computed densely, so must be masked (a gradient
        computed by connections is zero everywhere else already): (weight, boolean mask as a
        numpy view, factor) of float32 CPU weights, (weight, factor) of the others. Taken once
        per topology, as the choice changes with it alone."""
        if self._masked_for != self.version:
            self._masked_for = self.version
            layers = zip(
                self.weights, self.masks, self._factors, self._kernels, self._compiled, strict=True
            )
            dense = [(w, m, f, c) for w, m, f, k, c in layers if not self._by_connections(k)]
            self._masked = (
                [(w, m.numpy(), f) for w, m, f, c in dense if c],
                [(w, f) for w, _, f, c in dense if not c],
            )
        return self._masked

    def keeps_gradients(self, step: int) -> bool:
        """Whether ``mask_gradients(step)`` keeps the dense gradient (a rule that grows by
        gradient, at its topology update)."""
        return (
            self.rule is not None
            and self.rule.needs_gradients
            and self.schedule is not None
            and self.schedule.is_update_step(step)
        )

    @staticmethod
    def _by_connections(kernel: LayerKernel) -> bool:
        """Whether the layer's last pass was computed by its connections (its network uses the
        kernel, and the kernel chose them)."""
        return kernel.used and kernel.connections() is not None

    @property
    def factors(self) -> list[Tensor]:
        """The masks as 0/1 tensors of the weights' dtype (cached for per-step multiplies)."""
        return self._factors

    def active_counts(self) -> list[Tensor]:
        """Active connections per layer, shaped like the leading member dimensions."""
        return [m.sum(dim=(-2, -1)) for m in self.masks]

    def densities(self) -> list[float]:
        """Mean density of each layer over members."""
        return [m.float().mean().item() for m in self.masks]

    def maybe_update(self, step: int) -> list[list[int]] | None:
        """Run the topology rule if the schedule says so at gradient step ``step``.

        Returns the number of connections replaced per layer and stacked row, or None.
        """
        if self.rule is None or self.schedule is None or not self.schedule.is_update_step(step):
            return None
        return self.update_topology(self.schedule.drop_fraction_at(step), step)

    @torch.no_grad()
    def update_topology(self, fraction: float, step: int | None = None) -> list[list[int]]:
        """Apply the rule to every layer at once; returns connections moved (or pruned) per layer
        and stacked row, members flattened (one dropped and regrown in place does not count)."""
        if self.rule is None or self.generator is None:
            raise ValueError("these layers have static masks: give a rule and a generator")
        if not self.weights:
            return []
        rows = [w.detach().reshape(-1, w.shape[-2] * w.shape[-1]) for w in self.weights]
        flat_masks = [m.reshape(r.shape) for m, r in zip(self.masks, rows, strict=True)]
        gradients = None
        if self.rule.needs_gradients:
            if self._dense_gradients is None:
                raise RuntimeError(
                    "this rule grows by gradient: call mask_gradients(step) at the update step"
                )
            gradients = [
                g.reshape(r.shape) for g, r in zip(self._dense_gradients, rows, strict=True)
            ]
            self._dense_gradients = None
        change = self.rule.change(rows, flat_masks, fraction, step, self.generator, gradients)
        if self.frozen is not None:  # every row is ranked on its own: undo the frozen ones
            kept = self.frozen.unsqueeze(1)
            for i, old in enumerate(flat_masks):
                change.masks[i] = torch.where(kept, old, change.masks[i])
                change.dropped[i] = change.dropped[i] & ~kept
                change.grown[i] = change.grown[i] & ~kept
        self.planned = [self.rule.density_after(step, i, d) for i, d in enumerate(self.planned)]
        replaced = []
        self.version += 1
        for i, weight in enumerate(self.weights):
            moved = (change.dropped[i] | change.grown[i]).view(weight.shape)
            self.masks[i].copy_(change.masks[i].view(weight.shape))
            self._factors[i].copy_(self.masks[i])
            weight.masked_fill_(moved, 0.0)
            clear_moments(self.optimizer, weight, moved)
            grown, dropped = change.grown[i], change.dropped[i]
            moves = torch.maximum((grown & ~dropped).sum(-1), (dropped & ~grown).sum(-1))
            replaced.append(moves.tolist())
        return replaced

    @torch.no_grad()
    def redraw_rows(self, position: int, rows: Tensor) -> None:
        """Give the chosen rows (output units) of sparse weight ``position`` as many connections
        as before, at positions drawn uniformly at random (with N:M masks, as many in each group
        of M inputs); ``rows`` is bool (*members, n_out).

        Weights and optimiser moments of those rows are left to the caller, who re-initialises
        the whole row (a recycled neuron); frozen members keep their masks.
        """
        assert self.generator is not None, "redrawing connections needs a random generator"
        if self.frozen is not None:
            rows = rows & ~self.frozen.view(-1, *[1] * (rows.dim() - 1))
        mask = self.masks[position]
        width = self.group or mask.shape[-1]  # what keeps its count
        flat = mask.reshape(-1, width)
        counts = flat.sum(1)
        scores = torch.rand(flat.shape, generator=self.generator, device=self.generator.device)
        drawn = lowest([scores.to(flat.device)], [counts], [counts])[0]
        chosen = rows.reshape(-1, 1).expand(-1, mask.shape[-1] // width).reshape(-1, 1)
        mask.copy_(torch.where(chosen, drawn, flat).view(mask.shape))
        self._factors[position].copy_(mask)
        self.version += 1

    def state_dict(self) -> dict:
        return {"masks": [m.cpu() for m in self.masks], "planned": torch.tensor(self.planned)}

    def load_state_dict(self, state: dict) -> None:
        for mask, factor, saved in zip(self.masks, self._factors, state["masks"], strict=True):
            mask.copy_(saved)
            factor.copy_(saved)
        planned = state.get("planned")  # absent before the sparse kernels: the masks' own
        self.planned = (
            planned.tolist()
            if planned is not None
            else [m.float().mean().item() for m in self.masks]
        )
        self.version += 1
