"""The agents' hyperparameters, apart from the agents: the configuration reads them without
importing torch, so that ``dstrl report`` and the configuration stay light."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dstrl.helptext import DEFAULT_IN_DOCSTRING


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


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters; defaults are those of the DS-SAC appendix."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    learning_rate: float = 3e-4
    """Adam step size of actor, critics and temperature."""
    weight_decay: float = 0.0
    """Adam's (L2) weight decay."""
    batch_size: int = 256
    """Transitions per gradient step and agent."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 1.0
    """Target update coefficient: 1 copies the critics (hard update), < 1 is Polyak averaging."""
    target_update_interval: int = 1000
    """Gradient steps between target updates (1 with a small tau for soft updates)."""
    alpha: float = 0.2
    """Entropy temperature (its initial value with --sac.autotune)."""
    autotune: bool = False
    """Tune the temperature towards --sac.target-entropy."""
    target_entropy: Annotated[float | None, DEFAULT_IN_DOCSTRING] = None
    """Entropy the tuned temperature aims for (default: minus the action dimension)."""
