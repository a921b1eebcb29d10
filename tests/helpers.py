"""Tiny training configurations that run in seconds."""

from pathlib import Path

from dstrl.agents.sac import SACConfig
from dstrl.agents.td3 import TD3Config
from dstrl.config import TrainConfig


def tiny_config(out: Path, **changes) -> TrainConfig:
    settings = dict(
        algo="ds-td3",
        env="Pendulum-v1",
        steps=400,
        start_steps=100,
        eval_every=200,
        eval_episodes=1,
        update_period=50,
        checkpoint_every=150,
        log_every=100,
        out=out,
        progress=False,
        tensorboard=False,
        td3=TD3Config(hidden_sizes=(32, 32), batch_size=32),
        # hard target updates, as DS-SAC, but often enough to happen in a tiny run
        sac=SACConfig(hidden_sizes=(32, 32), batch_size=32, target_update_interval=50),
    )
    settings.update(changes)
    dense = settings["algo"] in ("td3", "sac")
    if not dense and not {"lambdas", "density", "nm"} & set(changes):
        settings["lambdas"] = (1.0, 8.0)  # densities ~0.3 (input) and 0.5 (hidden) at width 32
    return TrainConfig(**settings)
