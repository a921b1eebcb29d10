"""Agents: losses and one update step. Sparsity is a configuration, not a subclass."""

from dstrl.lazy import exports

# each name's module, imported when the name is first used: the configuration imports
# dstrl.agents.settings without torch
__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "ActorCritic": "base",
        "SAC": "sac",
        "TD3": "td3",
        "SACConfig": "settings",
        "TD3Config": "settings",
    },
)
