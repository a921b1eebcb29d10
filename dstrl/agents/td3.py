"""TD3 (Fujimoto et al., 2018) for a population of agents, dense or sparse.

The shared machinery (member axis, twin critics, sparse layers and targets) is in
``dstrl.agents.base``; this file holds TD3's own losses, exploration and costs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dstrl.agents.base import ActorCritic
from dstrl.agents.settings import TD3Config
from dstrl.dormant import Recycling
from dstrl.nets import StackedMLP
from dstrl.sparse import LayerShape, forward_flops, training_flops
from dstrl.sparse.config import SparsityConfig


class TD3(ActorCritic):
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
        recycling: Recycling | None = None,
        actor_sparsity: SparsityConfig | None = None,
        topologies: tuple[str, ...] | None = None,
    ) -> None:
        self.config = config
        super().__init__(
            obs_dim,
            action_low,
            action_high,
            members,
            config.hidden_sizes,
            dict(lr=config.learning_rate, weight_decay=config.weight_decay),
            actor_outputs=len(np.atleast_1d(action_low)),
            actor_tanh=True,
            actor_target=True,
            sparsity=sparsity,
            generator=generator,
            recycling=recycling,
            actor_sparsity=actor_sparsity,
            topologies=topologies,
        )

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    # ---- acting -------------------------------------------------------------------------
    def _policy(self, net: StackedMLP, obs: Tensor) -> Tensor:
        return net(obs) * self.action_scale + self.action_bias

    def greedy(self, obs: Tensor) -> Tensor:
        """Noise-free actions (E, B, act_dim) for states (E, B, obs_dim)."""
        return self._policy(self.actor, obs)

    def exploration(self, states: Tensor) -> Tensor:
        """Gaussian noise on the policy's own actions, clipped to the action box, and those
        noise-free actions (μ), stacked (2, E, act_dim)."""
        mean = self.greedy(states).squeeze(1)
        noise = torch.randn(mean.shape, generator=self.generator, device=self.device)
        action = mean + noise * (self.config.exploration_noise * self.action_scale)
        action = torch.clamp(action, self.action_low, self.action_high)
        return torch.stack([action, mean])

    # ---- learning -----------------------------------------------------------------------
    def gradient_step(
        self,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
        discount: Tensor | float | None,
    ) -> None:
        """TD3's critic step, and every ``policy_delay`` updates its actor step and soft target
        updates."""
        cfg = self.config
        discount = cfg.gamma if discount is None else discount
        assert self.actor_target is not None
        with torch.no_grad():
            noise = torch.randn(action.shape, generator=self.generator, device=self.device)
            noise = (noise * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_action = self._policy(self.actor_target, next_obs) + noise * self.action_scale
            next_action = torch.clamp(next_action, self.action_low, self.action_high)
            next_q = self._q(self.critic_target, next_obs, next_action).amin(dim=1)
            target = reward + discount * (1 - terminated) * next_q
        self._critic_step(obs, action, target)
        if self._step_kind():
            first_critic = slice(0, None, 2)
            x = torch.cat([obs, self._policy(self.actor, obs)], dim=-1)
            self._actor_step(-self.critic(x, members=first_critic, frozen=True).mean(dim=(1, 2)))
            self._update_targets(cfg.tau)

    def _step_kind(self) -> bool:
        """Whether this update takes the delayed actor step and target updates."""
        return self.updates % self.config.policy_delay == 0

    # ---- accounting ---------------------------------------------------------------------
    def _step_flops(
        self,
        actor: list[LayerShape],
        critic: list[LayerShape],
        target_actor: list[LayerShape],
        target_critic: list[LayerShape],
    ) -> int:
        """Target actor and both target critics forward; both critics trained; the actor trained
        through the first critic, averaged over the policy delay."""
        batch = self.config.batch_size
        target = forward_flops(target_actor, batch) + 2 * forward_flops(target_critic, batch)
        critic_step = 2 * training_flops(forward_flops(critic, batch))
        actor_step = training_flops(forward_flops(actor, batch) + forward_flops(critic, batch))
        return target + critic_step + actor_step // self.config.policy_delay
