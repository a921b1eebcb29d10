"""TD3 (Fujimoto et al., 2018) for a population of agents, dense or sparse.

All tensors carry a leading member axis E: the actor stack has E members, the critic stack 2E
(member 2e + j is twin critic j of agent e). Losses are summed over members, so every agent
gets exactly the gradient it would get alone. Sparsity (static or dynamic) is delegated to
``dstrl.sparse``; this file never decides which connection lives.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dstrl.nets import StackedMLP
from dstrl.optim import Adam
from dstrl.sparse import LayerShape, SparseTarget, forward_flops, training_flops
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.engine import MaskedLayers


@dataclass(frozen=True)
class TD3Config:
    """TD3 hyperparameters; defaults are those of the DS-TD3 release."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    learning_rate: float = 1e-3
    """Adam step size of actor and critics."""
    weight_decay: float = 2e-4
    """Adam's (L2) weight decay."""
    batch_size: int = 100
    """Transitions per gradient step and agent."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target networks."""
    policy_noise: float = 0.2
    """Std of the target-policy smoothing noise, as a fraction of the action half-range."""
    noise_clip: float = 0.5
    """Clip of the target-policy noise, as a fraction of the action half-range."""
    policy_delay: int = 2
    """Critic updates per actor and target update."""
    exploration_noise: float = 0.1
    """Std of the Gaussian exploration noise, as a fraction of the action half-range."""


class TD3:
    """E independent TD3 agents updated in lockstep."""

    def __init__(
        self,
        obs_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        members: int,
        config: TD3Config,
        sparsity: SparsityConfig | None,
        generator: torch.Generator,
    ) -> None:
        self.config = config
        self.sparsity = sparsity
        self.members = members
        self.generator = generator
        device = self.device = generator.device
        low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        self.action_low, self.action_high = low, high
        self.action_scale, self.action_bias = (high - low) / 2, (high + low) / 2
        act_dim = low.numel()
        hidden = list(config.hidden_sizes)
        self.actor = StackedMLP(members, [obs_dim, *hidden, act_dim], generator, output_tanh=True)
        self.critic = StackedMLP(2 * members, [obs_dim + act_dim, *hidden, 1], generator)
        self.actor_sparse: MaskedLayers | None = None
        self.critic_sparse: MaskedLayers | None = None
        if sparsity is not None:
            self.actor_sparse = sparsity.build(self.actor, generator)
            self.critic_sparse = sparsity.build(self.critic, generator)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.sparse_targets: list[SparseTarget] = []
        if sparsity is not None:
            for layers, target in (
                (self.actor_sparse, self.actor_target),
                (self.critic_sparse, self.critic_target),
            ):
                weights = [target.weights[i] for i in layers.indices]
                self.sparse_targets.append(SparseTarget(weights, layers, sparsity.target))
        adam = dict(lr=config.learning_rate, weight_decay=config.weight_decay)
        self.actor_optimizer = Adam(self.actor.parameters(), **adam)
        self.critic_optimizer = Adam(self.critic.parameters(), **adam)
        for layers, optimizer in (
            (self.actor_sparse, self.actor_optimizer),
            (self.critic_sparse, self.critic_optimizer),
        ):
            if layers is not None:
                layers.attach_optimizer(optimizer)
        self._actor_params = list(self.actor.parameters())
        self._online = self._actor_params + list(self.critic.parameters())
        self._targets = list(self.actor_target.parameters()) + list(self.critic_target.parameters())
        self.updates = 0
        self.last_topology_change: dict[str, list[int]] | None = None
        self._loss_sums = [torch.zeros((), device=device) for _ in range(2)]
        self._loss_counts = [0, 0]

    # ---- acting -------------------------------------------------------------------------
    def _policy(self, net: StackedMLP, obs: Tensor) -> Tensor:
        return net(obs) * self.action_scale + self.action_bias

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        """Actions (E, act_dim) for observations (E, obs_dim); Gaussian noise if ``explore``."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(1)
        action = self._policy(self.actor, x).squeeze(1)
        if explore:
            noise = torch.randn(action.shape, generator=self.generator, device=self.device)
            action = action + noise * (self.config.exploration_noise * self.action_scale)
            action = torch.clamp(action, self.action_low, self.action_high)
        return action.cpu().numpy()

    def _q(self, net: StackedMLP, obs: Tensor, action: Tensor) -> Tensor:
        """Both twin critics: (E, B, ·) inputs to (E, 2, B) values."""
        x = torch.cat([obs, action], dim=-1).repeat_interleave(2, dim=0)
        return net(x).view(self.members, 2, -1)

    # ---- learning -----------------------------------------------------------------------
    def update(
        self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor
    ) -> None:
        """One TD3 gradient step on a batch (E, B, ·); losses accumulate for ``pop_losses``."""
        cfg = self.config
        self.updates += 1
        with torch.no_grad():
            noise = torch.randn(action.shape, generator=self.generator, device=self.device)
            noise = (noise * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_action = self._policy(self.actor_target, next_obs) + noise * self.action_scale
            next_action = torch.clamp(next_action, self.action_low, self.action_high)
            next_q = self._q(self.critic_target, next_obs, next_action).amin(dim=1)
            target = reward + cfg.gamma * (1 - terminated) * next_q
        q = self._q(self.critic, obs, action)
        critic_loss = (q - target.unsqueeze(1)).square().mean(dim=-1).sum()
        self.critic_optimizer.zero_grad(set_to_none=False)
        critic_loss.backward()
        if self.critic_sparse is not None:
            self.critic_sparse.mask_gradients(self.updates)
        self.critic_optimizer.step()

        self._loss_sums[0].add_(critic_loss.detach())
        self._loss_counts[0] += 1
        if self.updates % cfg.policy_delay == 0:
            first_critic = slice(0, None, 2)
            x = torch.cat([obs, self._policy(self.actor, obs)], dim=-1)
            actor_loss = -self.critic(x, members=first_critic).mean(dim=(1, 2)).sum()
            self.actor_optimizer.zero_grad(set_to_none=False)
            actor_loss.backward(inputs=self._actor_params)
            if self.actor_sparse is not None:
                self.actor_sparse.mask_gradients(self.updates)
            self.actor_optimizer.step()
            self._update_targets()
            self._loss_sums[1].add_(actor_loss.detach())
            self._loss_counts[1] += 1
        self._update_topology()

    @torch.no_grad()
    def _update_targets(self) -> None:
        torch._foreach_lerp_(self._targets, self._online, self.config.tau)
        for target in self.sparse_targets:
            target.after_polyak()

    def _update_topology(self) -> None:
        self.last_topology_change = None
        if self.actor_sparse is None or self.critic_sparse is None:
            return
        actor = self.actor_sparse.maybe_update(self.updates)
        critic = self.critic_sparse.maybe_update(self.updates)
        if actor is not None or critic is not None:
            self.last_topology_change = {"actor": actor or [], "critic": critic or []}

    def pop_losses(self) -> dict[str, float]:
        """Mean critic and actor loss per agent since the last call (one sync, not one per step)."""
        sums = [float(x) for x in self._loss_sums]
        names = ("critic_loss", "actor_loss")
        means = {
            name: total / (count * self.members)
            for name, total, count in zip(names, sums, self._loss_counts, strict=True)
            if count
        }
        self._loss_sums = [torch.zeros((), device=self.device) for _ in range(2)]
        self._loss_counts = [0, 0]
        return means

    # ---- accounting ---------------------------------------------------------------------
    def layer_shapes(self) -> dict[str, list[LayerShape]]:
        """Active connections per layer of one agent's actor and of one of its critics."""
        result = {}
        for name, net, layers in (
            ("actor", self.actor, self.actor_sparse),
            ("critic", self.critic, self.critic_sparse),
        ):
            active = [n_in * n_out for n_in, n_out in net.shapes]
            if layers is not None:
                for i, count in zip(layers.indices, layers.active_counts(), strict=True):
                    active[i] = int(count.float().mean().round())
            result[name] = [
                LayerShape(n_in, n_out, a)
                for (n_in, n_out), a in zip(net.shapes, active, strict=True)
            ]
        return result

    def cost(self, dense: bool = False) -> dict[str, int]:
        """Per agent: parameters (all, actor, both critics), FLOPs of one action, and FLOPs of one
        gradient step.

        A gradient step averages the actor step over the policy delay and includes the target
        actor and target critics' forward passes (targets have the online count, except with
        ``target=dense``, where they are counted dense). With gradient growth (RigL), the dense
        weight gradients of each topology update (2·inactive·batch per layer) are spread over
        the update period.
        """
        shapes = self.layer_shapes()
        if dense:
            shapes = {k: [s.dense() for s in v] for k, v in shapes.items()}
        actor, critic = shapes["actor"], shapes["critic"]
        target_dense = self.sparsity is not None and self.sparsity.target == "dense"
        t_actor = [s.dense() for s in actor] if target_dense else actor
        t_critic = [s.dense() for s in critic] if target_dense else critic
        batch = self.config.batch_size
        target = forward_flops(t_actor, batch) + 2 * forward_flops(t_critic, batch)
        critic_step = 2 * training_flops(forward_flops(critic, batch))
        actor_step = training_flops(forward_flops(actor, batch) + forward_flops(critic, batch))
        train = target + critic_step + actor_step // self.config.policy_delay
        if self.sparsity is not None and self.sparsity.grow == "gradient" and not dense:
            # RigL: at each topology update the weight gradients are computed densely
            missing = sum(s.dense().active - s.active for s in actor) + 2 * sum(
                s.dense().active - s.active for s in critic
            )
            train += 2 * missing * batch // self.sparsity.schedule.update_period
        actor_params = sum(s.params for s in actor)
        critic_params = 2 * sum(s.params for s in critic)
        return {
            "params": actor_params + critic_params,
            "actor_params": actor_params,
            "critic_params": critic_params,
            "inference_flops": forward_flops(actor, 1),
            "train_flops": train,
        }

    # ---- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "updates": self.updates,
            "loss_sums": [float(x) for x in self._loss_sums],
            "loss_counts": list(self._loss_counts),
        }
        if self.actor_sparse is not None and self.critic_sparse is not None:
            state["actor_masks"] = self.actor_sparse.state_dict()
            state["critic_masks"] = self.critic_sparse.state_dict()
            state["target_supports"] = [t.state_dict() for t in self.sparse_targets]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_target.load_state_dict(state["actor_target"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if state["generator_device"] == self.device.type:
            self.generator.set_state(state["generator"])
        else:  # another device's generator state cannot be restored: a new, seeded stream
            self.generator.manual_seed(int(state["updates"]))
        self.updates = state["updates"]
        self._loss_sums = [torch.tensor(x, device=self.device) for x in state["loss_sums"]]
        self._loss_counts = list(state["loss_counts"])
        if self.actor_sparse is not None and self.critic_sparse is not None:
            self.actor_sparse.load_state_dict(state["actor_masks"])
            self.critic_sparse.load_state_dict(state["critic_masks"])
            for target, saved in zip(self.sparse_targets, state["target_supports"], strict=True):
                target.load_state_dict(saved)
