"""Soft Actor-Critic (Haarnoja et al., 2018) for a population of agents, dense or sparse.

A tanh-squashed Gaussian policy, twin critics with a target copy (soft Polyak or hard periodic
updates), and a fixed or automatically tuned temperature per agent. Defaults are those of the
DS-SAC appendix of Sokar et al. (IJCAI 2022). Shared machinery lives in ``dstrl.agents.base``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from dstrl.agents.base import ActorCritic
from dstrl.agents.settings import SACConfig
from dstrl.dormant import Recycling
from dstrl.optim import Adam
from dstrl.sparse import LayerShape, forward_flops, training_flops
from dstrl.sparse.config import SparsityConfig

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class SAC(ActorCritic):
    """E independent SAC agents updated in lockstep."""

    loss_names = ("critic_loss", "actor_loss", "alpha")

    def __init__(
        self,
        obs_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        members: int,
        config: SACConfig,
        sparsity: SparsityConfig | None,
        generator: torch.Generator,
        recycling: Recycling | None = None,
        actor_sparsity: SparsityConfig | None = None,
        topologies: tuple[str, ...] | None = None,
    ) -> None:
        self.config = config
        act_dim = len(np.atleast_1d(action_low))
        super().__init__(
            obs_dim,
            action_low,
            action_high,
            members,
            config.hidden_sizes,
            dict(lr=config.learning_rate, weight_decay=config.weight_decay),
            actor_outputs=2 * act_dim,  # mean and log std
            actor_tanh=False,
            actor_target=False,
            sparsity=sparsity,
            generator=generator,
            recycling=recycling,
            actor_sparsity=actor_sparsity,
            topologies=topologies,
        )
        self.log_alpha = torch.full(
            (members,), math.log(config.alpha), device=self.device, requires_grad=config.autotune
        )
        self.alpha_optimizer = None
        if config.autotune:
            self.alpha_optimizer = Adam([self.log_alpha], lr=config.learning_rate)
        self.target_entropy = (
            -float(act_dim) if config.target_entropy is None else config.target_entropy
        )
        self._log_scale = self.action_scale.log().sum()

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    # ---- policy -------------------------------------------------------------------------
    def _squash(self, u: Tensor) -> Tensor:
        return torch.tanh(u) * self.action_scale + self.action_bias

    def greedy(self, obs: Tensor) -> Tensor:
        """Noise-free (squashed mean) actions (E, B, act_dim) for states (E, B, obs_dim)."""
        return self._squash(self.actor(obs)[..., : self.act_dim])

    def _sample(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Squashed-Gaussian actions (E, B, act_dim), their log-probabilities (E, B), and the
        Gaussian's means (before squashing)."""
        mean, log_std = self.actor(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        noise = torch.randn(mean.shape, generator=self.generator, device=self.device)
        u = mean + noise * log_std.exp()
        # log N(u) minus log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), and the action scale
        log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - functional.softplus(-2 * u))).sum(-1)
        return self._squash(u), log_prob - self._log_scale, mean

    def exploration(self, states: Tensor) -> Tensor:
        """Sampled actions and the squashed means (μ), stacked (2, E, act_dim)."""
        action, _, mean = self._sample(states)
        return torch.stack([action.squeeze(1), self._squash(mean).squeeze(1)])

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
        """SAC's critic, actor and temperature steps, and every ``target_update_interval``
        updates the soft target update; the next action is sampled at ``next_obs``, the n-step
        state."""
        cfg = self.config
        discount = cfg.gamma if discount is None else discount
        alpha = self.log_alpha.detach().exp().unsqueeze(1)  # (E, 1)
        with torch.no_grad():
            next_action, next_log_prob, _ = self._sample(next_obs)
            next_q = self._q(self.critic_target, next_obs, next_action).amin(dim=1)
            target = reward + discount * (1 - terminated) * (next_q - alpha * next_log_prob)
        self._critic_step(obs, action, target)
        new_action, log_prob, _ = self._sample(obs)
        q = self._q(self.critic, obs, new_action, frozen=True).amin(dim=1)
        self._actor_step((alpha * log_prob - q).mean(dim=1))
        if self.alpha_optimizer is not None:
            entropy_gap = (log_prob.detach() + self.target_entropy).mean(dim=1)
            alpha_loss = -(self.log_alpha * entropy_gap).sum()
            self.alpha_optimizer.zero_grad(set_to_none=False)
            alpha_loss.backward()
            self._hold_halted([self.log_alpha], 1)
            self.alpha_optimizer.step()
        self._record(2, alpha.squeeze(1))
        if self._step_kind():
            self._update_targets(cfg.tau)

    def _step_kind(self) -> bool:
        """Whether this update takes the soft target update."""
        return self.updates % self.config.target_update_interval == 0

    # ---- accounting ---------------------------------------------------------------------
    def _step_flops(
        self,
        actor: list[LayerShape],
        critic: list[LayerShape],
        target_actor: list[LayerShape],
        target_critic: list[LayerShape],
    ) -> int:
        """The actor's next actions and both target critics forward; both critics trained; the
        actor trained through both critics (their minimum), every step."""
        batch = self.config.batch_size
        target = forward_flops(actor, batch) + 2 * forward_flops(target_critic, batch)
        critic_step = 2 * training_flops(forward_flops(critic, batch))
        actor_step = training_flops(forward_flops(actor, batch) + 2 * forward_flops(critic, batch))
        return target + critic_step + actor_step

    # ---- health -------------------------------------------------------------------------
    def _member_tensors(self) -> dict[str, list[tuple[Tensor, int]]]:
        parts = super()._member_tensors()
        temperature = [self.log_alpha.data]
        if self.alpha_optimizer is not None:
            state = self.alpha_optimizer.state.get(self.log_alpha, {})
            temperature += [v for v in state.values() if torch.is_tensor(v)]
        parts["temperature"] = [(t, 1) for t in temperature]
        return parts

    # ---- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["log_alpha"] = self.log_alpha.detach().cpu()
        if self.alpha_optimizer is not None:
            state["alpha_optimizer"] = self.alpha_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if self.alpha_optimizer is not None:
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
