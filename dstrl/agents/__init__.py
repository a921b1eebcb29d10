"""Agents: losses and one update step. Sparsity is a configuration, not a subclass."""

from dstrl.agents.td3 import TD3, TD3Config

__all__ = ["TD3", "TD3Config"]
