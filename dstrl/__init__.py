"""dstrl: dynamic sparse training for deep reinforcement learning.

What a script needs is here, each name imported on first use, so that ``import dstrl`` stays
light: ``TrainConfig`` (with ``TD3Config`` and ``SACConfig``) to configure a run, which
``dstrl.train.train`` trains (``dstrl.train`` is that module's name), ``write_report`` for the
paper's table and figures, ``load_policy`` for an exported policy, and ``ConfigError`` and
``PolicyError``, what a wrong setting and a policy file that cannot be used raise.
"""

from dstrl.lazy import exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "TrainConfig": "config",
        "ConfigError": "config",
        "TD3Config": "agents.settings",
        "SACConfig": "agents.settings",
        "write_report": "analysis.report",
        "load_policy": "policy",
        "PolicyError": "errors",
    },
)
del exports
