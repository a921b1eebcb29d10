"""What every actor-critic agent here shares: stacked actor and twin critics, their sparse layers
and sparse targets, optimisers, topology updates, loss bookkeeping, costs and persistence.

All tensors carry a leading member axis E: the actor stack has E members, the critic stack 2E
(member 2e + j is twin critic j of agent e). Losses are summed over members, so every agent gets
exactly the gradient it would get alone. Sparsity is delegated to ``dstrl.sparse``; nothing here
decides which connection lives.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable

import numpy as np
import torch
from torch import Tensor

from dstrl.dormant import Recycling, dormant_fractions, dormant_units, recycle
from dstrl.nets import StackedMLP
from dstrl.optim import Adam
from dstrl.sparse import LayerShape, SparseTarget, forward_flops
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.engine import MaskedLayers


class ActorCritic:
    """E independent actor-critic agents updated in lockstep; subclasses supply the losses."""

    loss_names: tuple[str, ...] = ("critic_loss", "actor_loss")

    def __init__(
        self,
        obs_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        members: int,
        hidden_sizes: tuple[int, ...],
        optimizer: dict,
        actor_outputs: int,
        actor_tanh: bool,
        actor_target: bool,
        sparsity: SparsityConfig | None,
        generator: torch.Generator,
        recycling: Recycling | None = None,
        actor_sparsity: SparsityConfig | None = None,
        topologies: tuple[str, ...] | None = None,
    ) -> None:
        """``actor_sparsity``: the actor's own sparse configuration (default ``sparsity``).
        ``topologies``: in a mixed population, each agent's own (dense, static or set; default
        the sparsity's for all)."""
        self.sparsity = sparsity
        self.topologies = topologies
        self.actor_sparsity = sparsity if actor_sparsity is None else actor_sparsity
        self.recycling = recycling
        self.recycled = 0  # neurons recycled since the last ``pop_recycled``
        self.members = members
        self.generator = generator
        device = self.device = generator.device
        low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        self.action_low, self.action_high = low, high
        self.action_scale, self.action_bias = (high - low) / 2, (high + low) / 2
        act_dim = self.act_dim = low.numel()
        hidden = list(hidden_sizes)
        self.actor = StackedMLP(
            members, [obs_dim, *hidden, actor_outputs], generator, output_tanh=actor_tanh
        )
        self.critic = StackedMLP(2 * members, [obs_dim + act_dim, *hidden, 1], generator)
        self.actor_sparse: MaskedLayers | None = None
        self.critic_sparse: MaskedLayers | None = None
        if sparsity is not None:
            dense = frozen = None
            if topologies is not None:
                dense = torch.tensor([t == "dense" for t in topologies])
                frozen = torch.tensor([t != "set" for t in topologies])
            self.actor_sparse = self.actor_sparsity.build(self.actor, generator, dense, frozen)
            self.critic_sparse = sparsity.build(
                self.critic,
                generator,
                None if dense is None else dense.repeat_interleave(2),
                None if frozen is None else frozen.repeat_interleave(2),
            )
        self.actor_target = None
        if actor_target:
            self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.sparse_targets: list[SparseTarget] = []
        if sparsity is not None:
            pairs = [(self.critic_sparse, self.critic_target)]
            if self.actor_target is not None:
                pairs.insert(0, (self.actor_sparse, self.actor_target))
            for layers, target in pairs:
                weights = [target.weights[i] for i in layers.indices]
                self.sparse_targets.append(SparseTarget(weights, layers, sparsity.target))
                target.use_kernels(self.sparse_targets[-1].kernels())
            # only now: the targets' deep copies must not share the online networks' kernels
            self.actor.use_kernels(self.actor_sparse.kernels())
            self.critic.use_kernels(self.critic_sparse.kernels())
        self.actor_optimizer = Adam(self.actor.parameters(), **optimizer)
        self.critic_optimizer = Adam(self.critic.parameters(), **optimizer)
        for layers, optim in (
            (self.actor_sparse, self.actor_optimizer),
            (self.critic_sparse, self.critic_optimizer),
        ):
            if layers is not None:
                layers.attach_optimizer(optim)
        self._online = list(self.critic.parameters())
        self._targets = list(self.critic_target.parameters())
        if self.actor_target is not None:
            self._online = list(self.actor.parameters()) + self._online
            self._targets = list(self.actor_target.parameters()) + self._targets
        self.updates = 0
        # connections replaced by the last update's topology change, per layer and agent
        self.last_topology_change: dict[str, list[list[int]]] | None = None
        self.halted: Tensor | None = None  # (E,) bool once a member has been halted
        self._halted_rows: dict[int, Tensor] = {}  # rows per member → the halted rows' indices
        self.halts = 0  # calls of ``halt`` so far
        # per loss, each member's running sum and the steps it holds (``pop_losses``)
        self._loss_sums = torch.zeros(len(self.loss_names), members, device=device)
        self._loss_counts = torch.zeros(len(self.loss_names), dtype=torch.long, device=device)

    # ---- an update ----------------------------------------------------------------------
    def update(
        self,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
        discount: Tensor | float | None = None,
    ) -> None:
        """One gradient step on a batch (E, B, ·), then the periodic part of an update; losses
        accumulate for ``pop_losses``. ``discount`` of the bootstrap (n-step batches: per
        transition; default γ)."""
        self.updates += 1
        self.gradient_step(obs, action, reward, next_obs, terminated, discount)
        self.restructure(obs, action)

    def gradient_step(
        self,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
        discount: Tensor | float | None,
    ) -> None:
        """The tensor work of update number ``updates``: losses, gradients, optimiser steps,
        soft target updates and their pruning. Beyond tensors it reads only what ``graph_key``
        names, so a CUDA graph captured for one key replays every update with that key."""
        raise NotImplementedError

    def _step_kind(self) -> Hashable:
        """Which of the algorithm's steps update number ``updates`` takes (e.g. TD3's delayed
        actor step or not)."""
        raise NotImplementedError

    def graph_key(self, discount: Tensor | float | None) -> Hashable | None:
        """Everything besides tensor contents that ``gradient_step`` of update number
        ``updates`` depends on; None when that step must run eagerly (a rule that grows by
        gradient keeps a dense gradient at its topology update)."""
        layers = [m for m in (self.actor_sparse, self.critic_sparse) if m is not None]
        if any(m.keeps_gradients(self.updates) for m in layers):
            return None
        bootstrap = "per transition" if torch.is_tensor(discount) else discount
        targets = tuple(t.graph_key() for t in self.sparse_targets)
        return (self._step_kind(), bootstrap, self.halts, targets)

    def graph_obstacle(self) -> str | None:
        """Why this agent's gradient steps cannot be captured as device work alone, or None:
        layers computed by their connections and compiled target pruning run CPU kernels."""
        layers = [m for m in (self.actor_sparse, self.critic_sparse) if m is not None]
        if any(k.choice != "masked" for m in layers for k in m.kernels().values()):
            return "its sparse layers run CPU kernels (use --sparse-kernels masked)"
        if any(t.compiled and t.mode == "magnitude" for t in self.sparse_targets):
            return "its sparse targets are pruned by a CPU kernel"
        return None

    # ---- shared steps -------------------------------------------------------------------
    def _q(self, net: StackedMLP, obs: Tensor, action: Tensor, frozen: bool = False) -> Tensor:
        """Both twin critics: (E, B, ·) inputs to (E, 2, B) values; ``frozen`` as in
        ``StackedMLP.forward`` (an actor's loss)."""
        return net(self._twin_input(obs, action), frozen=frozen).view(self.members, 2, -1)

    @staticmethod
    def _twin_input(obs: Tensor, action: Tensor) -> Tensor:
        """(obs, action) of agent e as the input of critic members 2e and 2e + 1."""
        return torch.cat([obs, action], dim=-1).repeat_interleave(2, dim=0)

    def _critic_step(self, obs: Tensor, action: Tensor, target: Tensor) -> None:
        """Regress both twins at (obs, action) onto ``target`` (E, B) and take an optimiser step.

        The squared error's gradient is written out (2·error/B per twin), so the critics'
        backward runs without autograd."""
        q, saved = self.critic.forward_saved(self._twin_input(obs, action))
        error = q.view(self.members, 2, -1) - target.unsqueeze(1)
        self.critic.backward_from(saved, (error * (2 / error.shape[-1])).view(q.shape))
        self._hold_halted(self.critic.parameters(), 2)
        if self.critic_sparse is not None:
            self.critic_sparse.mask_gradients(self.updates)
        self.critic_optimizer.step()
        self._record(0, error.square().mean(dim=-1).sum(dim=1))

    def _actor_step(self, losses: Tensor) -> None:
        """Minimise the members' actor losses (E,)."""
        self.actor_optimizer.zero_grad()
        losses.sum().backward()  # the critics in an actor's loss are frozen: actor gradients only
        self._hold_halted(self.actor.parameters(), 1)
        if self.actor_sparse is not None:
            self.actor_sparse.mask_gradients(self.updates)
        self.actor_optimizer.step()
        self._record(1, losses)

    @torch.no_grad()
    def _update_targets(self, tau: float) -> None:
        torch._foreach_lerp_(self._targets, self._online, tau)
        for target in self.sparse_targets:
            target.after_polyak()

    def restructure(self, obs: Tensor, action: Tensor) -> None:
        """The periodic part of an update, run eagerly: topology updates, ReDo, and the sparse
        targets catching up with them. The rest of an update never reads the device from the
        host (on a GPU)."""
        self._update_topology()
        self._recycle(obs, action)
        for target in self.sparse_targets:
            target.follow()

    def _update_topology(self) -> None:
        self.last_topology_change = None
        if self.actor_sparse is None or self.critic_sparse is None:
            return
        actor = self.actor_sparse.maybe_update(self.updates)
        critic = self.critic_sparse.maybe_update(self.updates)
        if actor is not None or critic is not None:
            self.last_topology_change = {
                "actor": [self._per_agent(moved) for moved in actor or []],
                "critic": [self._per_agent(moved) for moved in critic or []],
            }

    def _per_agent(self, rows: list[int]) -> list[int]:
        """Counts of a layer's stacked rows (a member's twin critics are consecutive rows)
        summed for each member."""
        k = len(rows) // self.members
        return [sum(rows[i * k : (i + 1) * k]) for i in range(self.members)]

    # ---- acting -------------------------------------------------------------------------
    def greedy(self, obs: Tensor) -> Tensor:
        """Noise-free actions (E, B, act_dim) for states (E, B, obs_dim)."""
        raise NotImplementedError

    def exploration(self, states: Tensor) -> Tensor:
        """Exploratory actions for states (E, 1, obs_dim) and the noise-free actions (μ) they
        come from, stacked (2, E, act_dim): the device work of ``explore``."""
        raise NotImplementedError

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exploratory actions (E, act_dim) for observations (E, obs_dim), and the noise-free
        actions (μ) they come from (one copy back from the device)."""
        both = self.exploration(self.states(obs)).cpu().numpy()
        return both[0], both[1]

    def states(self, obs: np.ndarray) -> Tensor:
        """Observations (E, obs_dim) as a batch of one state per member (E, 1, obs_dim)."""
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        """Actions (E, act_dim) for observations (E, obs_dim): exploratory if ``explore``, else
        noise-free."""
        if explore:
            return self.explore(obs)[0]
        return self.greedy(self.states(obs)).squeeze(1).cpu().numpy()

    @torch.no_grad()
    def policy_distance(self, obs: Tensor, policy_action: Tensor) -> np.ndarray:
        """RLx2's policy distance per agent (E,): half the mean squared gap, in units of the
        action half-range, between today's noise-free actions at ``obs`` and the noise-free
        actions ``policy_action`` stored with them."""
        gap = (self.greedy(obs) - policy_action) / self.action_scale
        return (0.5 * gap.square().mean(dim=(1, 2))).cpu().numpy()

    # ---- dormant neurons ----------------------------------------------------------------
    def dormant_names(self) -> list[str]:
        """One name per hidden layer of actor and critics, e.g. ``dormant/critic_h2``."""
        return [
            f"dormant/{name}_h{k}"
            for name, net in (("actor", self.actor), ("critic", self.critic))
            for k in range(1, len(net.sizes) - 1)
        ]

    @torch.no_grad()
    def dormant(self, obs: Tensor, action: Tensor, threshold: float) -> dict[str, np.ndarray]:
        """Each agent's fraction of τ-dormant units (E,) per hidden layer, on states (E, B, ·)
        and, for the critics, the actions taken there (twin critics averaged)."""
        actor = dormant_fractions(self.actor, obs, threshold)
        critic = dormant_fractions(self.critic, self._twin_input(obs, action), threshold)
        values = actor + [c.view(self.members, 2).mean(dim=1) for c in critic]
        return dict(zip(self.dormant_names(), torch.stack(values).cpu().numpy(), strict=True))

    def _recycle(self, obs: Tensor, action: Tensor) -> None:
        """At the recycling period, recycle the dormant neurons of actor and critics found on
        this batch (ReDo); halted agents are left alone."""
        if self.recycling is None or self.updates % self.recycling.period:
            return
        threshold = self.recycling.threshold
        nets = (
            (self.actor, obs, self.actor_optimizer, self.actor_sparse, 1),
            (
                self.critic,
                self._twin_input(obs, action),
                self.critic_optimizer,
                self.critic_sparse,
                2,
            ),
        )
        for net, x, optimizer, layers, rows in nets:
            units = dormant_units(net.hidden(x), threshold)
            if self.halted is not None:
                units = [u & ~self._rows(self.halted, rows, 2) for u in units]
            self.recycled += recycle(net, units, optimizer, layers, self.generator)

    def pop_recycled(self) -> int:
        """Neurons recycled (all agents) since the last call."""
        count, self.recycled = self.recycled, 0
        return count

    # ---- losses -------------------------------------------------------------------------
    def _reset_losses(self) -> None:
        """Zero the running sums (L, E) and counts (L,), in place: a captured graph adds to
        these very tensors."""
        self._loss_sums.zero_()
        self._loss_counts.zero_()

    def _record(self, index: int, losses: Tensor) -> None:
        """Add the members' losses (E,) of one step to the running sums (halted members' stay
        at zero)."""
        losses = losses.detach()
        if self.halted is not None:
            losses = losses.masked_fill(self.halted, 0.0)
        self._loss_sums[index].add_(losses)
        self._loss_counts[index].add_(1)

    def _loss_sum(self, saved: Tensor | float) -> Tensor:
        """A saved loss sum as the members' sums (E,); older checkpoints kept one float, the sum
        over all members."""
        if torch.is_tensor(saved):
            return saved.to(self.device, torch.float32)
        return torch.full((self.members,), saved / self.members, device=self.device)

    def pop_losses(self) -> dict[str, np.ndarray]:
        """Each member's mean losses (E,) since the last call (read once per call, not per step)."""
        sums, counts = self._loss_sums.cpu().numpy(), self._loss_counts.cpu().numpy()
        means = {
            name: total / count
            for name, total, count in zip(self.loss_names, sums, counts, strict=True)
            if count
        }
        self._reset_losses()
        return means

    # ---- health -------------------------------------------------------------------------
    def _member_tensors(self) -> dict[str, list[tuple[Tensor, int]]]:
        """Every tensor with a member axis, by part, with its rows per member (critics: 2)."""
        parts: dict[str, list[tuple[Tensor, int]]] = {}
        nets = [("actor", self.actor, self.actor_target, self.actor_optimizer, 1)]
        nets.append(("critic", self.critic, self.critic_target, self.critic_optimizer, 2))
        for name, net, target, optimizer, rows in nets:
            tensors = [p.data for p in net.parameters()]
            if target is not None:
                tensors += list(target.parameters())
            for p in net.parameters():
                tensors += [v for v in optimizer.state.get(p, {}).values() if torch.is_tensor(v)]
            parts[f"{name} weights"] = [(t, rows) for t in tensors]
        for name, total in zip(self.loss_names, self._loss_sums.unbind(), strict=True):
            parts[name.replace("_", " ")] = [(total, 1)]
        return parts

    @torch.no_grad()
    def nonfinite(self) -> dict[str, np.ndarray]:
        """Per part (losses so far, then weights with their targets and optimiser moments),
        which members (E,) hold a NaN or an infinity: one sync for the whole population."""
        parts = self._member_tensors()
        finite = torch.stack(
            [
                torch.stack([t.isfinite().view(self.members, -1).all(1) for t, _ in tensors]).all(0)
                for tensors in parts.values()
            ]
        )
        return {part: ~ok for part, ok in zip(parts, finite.cpu().numpy(), strict=True)}

    @torch.no_grad()
    def halt(self, members: Tensor) -> None:
        """Stop the ``members`` (bool (E,)) for good, the others going on unchanged: their
        networks, targets, optimiser moments and loss sums become zero, and from now on so do
        their gradients and losses, so they hold still at finite values; their masks are
        frozen."""
        members = members.to(self.device)
        self.halted = members if self.halted is None else self.halted | members
        self.halts += 1
        self._halted_rows = {  # allocated here, never inside a captured graph
            rows: self.halted.repeat_interleave(rows).nonzero().squeeze(1) for rows in (1, 2)
        }
        for tensors in self._member_tensors().values():
            for tensor, rows in tensors:
                tensor.masked_fill_(self._rows(self.halted, rows, tensor.dim()), 0.0)
        for layers, rows in ((self.actor_sparse, 1), (self.critic_sparse, 2)):
            if layers is not None:
                layers.freeze(self.halted.repeat_interleave(rows))

    def _hold_halted(self, params, rows: int) -> None:
        """Zero the halted members' gradients (NaN-safe); nothing to do while none is halted.
        Only their rows are written (a fill through a broadcast member mask reads every entry:
        a population of five with one halted paid 3–4% more per update on the CPU)."""
        if self.halted is None:
            return
        index = self._halted_rows[rows]
        for p in params:
            if p.grad is not None:
                p.grad.index_fill_(0, index, 0.0)

    @staticmethod
    def _rows(members: Tensor, rows: int, dim: int) -> Tensor:
        """A member mask (E,) as a mask of a tensor's leading axis (E·rows, 1, ...)."""
        return members.repeat_interleave(rows).view(-1, *[1] * (dim - 1))

    # ---- accounting ---------------------------------------------------------------------
    def layer_shapes(self, members: slice | None = None) -> dict[str, list[LayerShape]]:
        """Active connections per layer of one agent's actor and of one of its critics (the
        mean over ``members``, default all agents)."""
        result = {}
        for name, net, layers, rows in (
            ("actor", self.actor, self.actor_sparse, 1),
            ("critic", self.critic, self.critic_sparse, 2),
        ):
            active = [n_in * n_out for n_in, n_out in net.shapes]
            if layers is not None:
                chosen = self._member_rows(members, rows)
                for i, count in zip(layers.indices, layers.active_counts(), strict=True):
                    active[i] = int(count.cpu()[chosen].float().mean().round())
            result[name] = [
                LayerShape(n_in, n_out, a)
                for (n_in, n_out), a in zip(net.shapes, active, strict=True)
            ]
        return result

    def layer_densities(self, members: slice | None = None) -> list[float]:
        """Mean density of every sparse layer, actor's then critics', over the agents
        ``members`` (default all)."""
        densities = []
        for layers, rows in ((self.actor_sparse, 1), (self.critic_sparse, 2)):
            if layers is not None:
                chosen = self._member_rows(members, rows).to(self.device)
                densities += [m[chosen].float().mean().item() for m in layers.masks]
        return densities

    def _member_rows(self, members: slice | None, rows: int) -> Tensor:
        """The leading-axis indices of the agents ``members`` in a stack with ``rows`` rows per
        agent (critics: 2)."""
        agents = torch.arange(self.members)[members or slice(None)]
        return (agents.unsqueeze(1) * rows + torch.arange(rows)).flatten()

    def _step_flops(
        self,
        actor: list[LayerShape],
        critic: list[LayerShape],
        target_actor: list[LayerShape],
        target_critic: list[LayerShape],
    ) -> int:
        """FLOPs of one gradient step of one agent (the algorithm's own arithmetic)."""
        raise NotImplementedError

    def cost(self, dense: bool = False, members: slice | None = None) -> dict[str, int]:
        """Per agent (of ``members``, default all), at the current topology: parameters (all,
        actor, both critics), FLOPs of one action, and FLOPs of one gradient step.

        Targets have the online count, except with ``target=dense``, where they are counted
        dense. With gradient growth (RigL), the dense weight gradients of each topology update
        (2·inactive·batch per layer) are spread over the update period.
        """
        shapes = self.layer_shapes(members)
        if dense:
            shapes = {k: [s.dense() for s in v] for k, v in shapes.items()}
        actor, critic = shapes["actor"], shapes["critic"]
        target_dense = self.sparsity is not None and self.sparsity.target == "dense"
        t_actor = [s.dense() for s in actor] if target_dense else actor
        t_critic = [s.dense() for s in critic] if target_dense else critic
        train = self._step_flops(actor, critic, t_actor, t_critic)
        rigl = self.sparsity is not None and self.sparsity.topology == "set"
        if rigl and self.topologies is not None:  # only agents whose topology changes pay
            rigl = all(t == "set" for t in self.topologies[members or slice(None)])
        needs_gradients = self.critic_sparse is not None and getattr(
            self.critic_sparse.rule, "needs_gradients", False
        )  # the rule's own word: a rule of the user's that grows by gradient pays too
        if rigl and needs_gradients and not dense:
            actor_missing = sum(s.dense().active - s.active for s in actor)
            critic_missing = 2 * sum(s.dense().active - s.active for s in critic)
            actor_period = self.actor_sparsity.schedule.update_period
            critic_period = self.sparsity.schedule.update_period
            missing = actor_missing * critic_period + critic_missing * actor_period
            train += 2 * missing * self.batch_size // (actor_period * critic_period)
        actor_params = sum(s.params for s in actor)
        critic_params = 2 * sum(s.params for s in critic)
        return {
            "params": actor_params + critic_params,
            "actor_params": actor_params,
            "critic_params": critic_params,
            "inference_flops": forward_flops(actor, 1),
            "train_flops": train,
        }

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    # ---- persistence --------------------------------------------------------------------
    def _modules(self) -> dict:
        modules = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }
        if self.actor_target is not None:
            modules["actor_target"] = self.actor_target
        return modules

    def state_dict(self) -> dict:
        state = {name: module.state_dict() for name, module in self._modules().items()}
        state.update(
            generator=self.generator.get_state(),
            generator_device=self.device.type,
            updates=self.updates,
            loss_sums=[x.clone() for x in self._loss_sums.cpu()],
            loss_counts=self._loss_counts.tolist(),
            recycled=self.recycled,
        )
        if self.actor_sparse is not None and self.critic_sparse is not None:
            state["actor_masks"] = self.actor_sparse.state_dict()
            state["critic_masks"] = self.critic_sparse.state_dict()
            state["target_supports"] = [t.state_dict() for t in self.sparse_targets]
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, module in self._modules().items():
            module.load_state_dict(state[name])
        if state["generator_device"] == self.device.type:
            self.generator.set_state(state["generator"])
        else:  # another device's generator state cannot be restored: a new, seeded stream
            self.generator.manual_seed(int(state["updates"]))
        self.updates = state["updates"]
        self._loss_sums.copy_(torch.stack([self._loss_sum(x) for x in state["loss_sums"]]))
        self._loss_counts.copy_(torch.tensor(state["loss_counts"]))
        self.recycled = int(state.get("recycled", 0))
        if self.actor_sparse is not None and self.critic_sparse is not None:
            self.actor_sparse.load_state_dict(state["actor_masks"])
            self.critic_sparse.load_state_dict(state["critic_masks"])
            for target, saved in zip(self.sparse_targets, state["target_supports"], strict=True):
                target.load_state_dict(saved)
