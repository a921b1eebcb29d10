"""The paper's settings, pinned: a change to a preset or a default fails here, not silently in a
result. Values from ../shared/reference/ds-td3.md (the DS-TD3 release and the DS-SAC appendix)."""

from pathlib import Path

import pytest

from dstrl.agents.settings import SACConfig, TD3Config
from dstrl.config import TrainConfig
from dstrl.sparse.distributions import er_density


def test_td3_has_the_ds_td3_releases_hyperparameters():
    c = TD3Config()
    assert (c.hidden_sizes, c.learning_rate, c.weight_decay, c.batch_size) == (
        (256, 256),
        1e-3,
        2e-4,
        100,
    )
    assert (c.gamma, c.tau, c.policy_delay) == (0.99, 0.005, 2)
    assert (c.exploration_noise, c.policy_noise, c.noise_clip) == (0.1, 0.2, 0.5)


def test_sac_has_the_ds_sac_appendixs_hyperparameters():
    c = SACConfig()
    assert (c.hidden_sizes, c.learning_rate, c.batch_size, c.gamma) == ((256, 256), 3e-4, 256, 0.99)
    assert (c.alpha, c.autotune) == (0.2, False)
    assert (c.tau, c.target_update_interval) == (1.0, 1000)  # a hard copy every 1,000 steps


def test_ds_td3_is_the_papers_recipe():
    config = TrainConfig(algo="ds-td3", env="HalfCheetah-v5", steps=1_000_000, out=Path("x"))
    assert (config.start_steps, config.eval_every, config.eval_episodes) == (25_000, 5_000, 10)
    assert (config.grow, config.drop_score, config.target_sparsity) == (
        "random",
        "signed",
        "magnitude",
    )
    sparsity = config.sparsity()
    assert sparsity.lambdas == (7.0, 64.0) and not sparsity.sparse_output
    critic, actor = sparsity.schedule, config.sparsity("actor").schedule
    assert (critic.update_period, critic.drop_fraction, critic.decay) == (1_000, 0.05, "constant")
    # the topology freezes 50,000 steps before the end: 925,000 learning steps after the warm-up
    assert config.frozen_steps == 50_000
    assert critic.stop_step == actor.stop_step == 925_000
    assert actor.update_period == 1_000  # counted in critic updates, as the release does
    # ER: HalfCheetah's 17 observations and 6 actions, 256-wide hidden layers
    assert er_density(17, 256, 7) == pytest.approx(0.4391, abs=1e-4)  # the actor's input layer
    assert er_density(23, 256, 7) == pytest.approx(0.3317, abs=1e-4)  # a critic's
    assert er_density(256, 256, 64) == 0.5


@pytest.mark.parametrize(
    ("env", "lambdas"),
    [
        ("HalfCheetah-v5", (12.0, 80.0)),
        ("Walker2d-v5", (12.0, 80.0)),
        ("Hopper-v5", (7.0, 20.0)),
        ("Ant-v5", (30.0, 64.0)),
        ("Humanoid-v5", (61.0, 64.0)),
        ("Pendulum-v1", (7.0, 64.0)),  # a task outside the appendix's table
    ],
)
def test_ds_sac_has_the_appendixs_per_task_lambdas(env, lambdas):
    config = TrainConfig(algo="ds-sac", env=env, steps=1_000_000, out=Path("x"))
    assert config.sparsity().lambdas == lambdas
    assert (config.start_steps, config.sparsity().schedule.drop_fraction) == (10_000, 0.1)
    assert config.sparsity().schedule.update_period == 1_000
