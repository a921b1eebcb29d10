"""Tiny training configurations that run in seconds."""

from pathlib import Path

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
    )
    settings.update(changes)
    if settings["algo"] != "td3" and "lambdas" not in changes and "density" not in changes:
        settings["lambdas"] = (1.0, 8.0)  # densities ~0.3 (input) and 0.5 (hidden) at width 32
    return TrainConfig(**settings)
