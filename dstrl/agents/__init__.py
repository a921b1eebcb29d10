"""Agents: losses and one update step. Sparsity is a configuration, not a subclass."""

from dstrl.agents.base import ActorCritic
from dstrl.agents.sac import SAC, SACConfig
from dstrl.agents.td3 import TD3, TD3Config

__all__ = ["SAC", "TD3", "ActorCritic", "SACConfig", "TD3Config"]
