"""RLx2's recipe: the preset, the per-net topology schedule, the dynamic buffer's policy distance
and shrink rule, and n-step targets switched on during a run."""

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from dstrl.agents.td3 import TD3, TD3Config
from dstrl.config import ConfigError, TrainConfig
from dstrl.data.replay import ReplayBuffer
from dstrl.train import Trainer, build_agent, train
from tests.helpers import tiny_config


def test_the_preset_scales_rlx2_to_the_run_and_yields_to_given_options():
    long = TrainConfig(algo="rlx2-td3", steps=3_000_000)
    assert (long.grow, long.drop_fraction, long.decay) == ("gradient", 0.5, "cosine")
    assert long.drop_score == "magnitude"  # RigL's and RLx2's, where DS-TD3's release is signed
    assert (long.update_period, long.actor_update_period) == (10_000, 20_000)
    assert (long.n_step, long.n_step_start, long.replay) == (3, 0.1, "dynamic")
    assert (long.target_sparsity, long.frozen_steps, long.buffer_min_size) == (
        "online-mask",
        0,
        100_000,
    )
    short = TrainConfig(algo="rlx2-sac", steps=100_000)
    assert (short.update_period, short.actor_update_period) == (1_000, 1_000)
    assert short.buffer_check_every == 1_000 and short.buffer_min_size == 20_000
    given = TrainConfig(algo="rlx2-td3", steps=100_000, grow="random", n_step=1, update_period=500)
    assert (given.grow, given.n_step, given.update_period, given.actor_update_period) == (
        "random",
        1,
        500,
        1_000,
    )
    plain = TrainConfig(algo="ds-td3")
    assert (plain.grow, plain.update_period, plain.n_step, plain.replay) == (
        "random",
        1_000,
        1,
        "uniform",
    )
    assert plain.drop_score == "signed"
    assert TrainConfig(algo="ds-td3", grow="gradient").drop_score == "magnitude"  # RigL's own
    assert TrainConfig(algo="rlx2-sac", drop_score="signed").drop_score == "signed"
    assert TrainConfig.from_json(long.to_json()).to_json() == long.to_json()


def test_the_actor_gets_its_own_schedule():
    config = TrainConfig(algo="rlx2-td3", steps=3_000_000, actor_topology_stop=0.5)
    critic, actor = config.sparsity("critic").schedule, config.sparsity("actor").schedule
    assert critic.stop_step == 2_975_000 and actor.stop_step == 1_487_500
    assert (critic.update_period, actor.update_period) == (10_000, 20_000)
    assert critic.drop_fraction_at(10_000) == pytest.approx(0.25 * (1 + np.cos(np.pi / 297.5)))
    assert actor.drop_fraction_at(1_487_500) == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_step": 0}, "--n-step must be a positive integer"),
        # a block of n x batch rows per update: memory ran out, or the run crawled for ever
        ({"n_step": 401}, "--n-step 401 exceeds the replay's capacity of 400 transitions"),
        ({"lambdas": ()}, "--lambdas takes 2 values (input, hidden), got 0"),  # not about λ=64
        ({"lambdas": (1.0, 2.0, 3.0)}, "--lambdas takes 2 values (input, hidden), got 3"),
        ({"n_step_start": 1.5}, "--n-step-start must be in [0, 1]"),
        ({"buffer_policy_distance": 0.0}, "--buffer-policy-distance positive"),
        ({"actor_topology_stop": 0.0}, "--actor-topology-stop must be in (0, 1]"),
        ({"actor_update_period": 999}, "--actor-update-period (999; default --update-period)"),
    ],
)
def test_bad_rlx2_options_are_named(tmp_path, change, message):
    config = tiny_config(tmp_path, algo="rlx2-td3", **change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.validate()


def test_policy_distance_in_units_of_the_action_half_range():
    agent = TD3(
        3,
        -2 * np.ones(2),
        2 * np.ones(2),
        2,
        TD3Config(hidden_sizes=(8,)),
        None,
        torch.Generator().manual_seed(0),
    )
    obs = torch.randn(2, 16, 3)
    mu = agent.greedy(obs) + torch.tensor([[[0.4, 0.0]], [[0.0, 0.0]]])  # 0.2 half-ranges
    assert agent.policy_distance(obs, mu) == pytest.approx([0.5 * 0.04 / 2, 0.0])


def test_the_dynamic_buffer_drops_the_oldest_tenth_of_agents_whose_policy_moved(tmp_path):
    config = tiny_config(tmp_path, algo="rlx2-td3", seeds=3, buffer_min_size=50)
    agent = build_agent(config)
    trainer = Trainer(config, agent, None)
    for _ in range(100):
        trainer._step_envs(*trainer._begin_step())
    mu = trainer.buffer.policy_actions
    obs = trainer.buffer.rows[..., : trainer.buffer.obs_dim]
    mu.copy_(agent.greedy(obs))  # every stored μ is today's policy ...
    mu[0] += 2.0  # ... except agent 0's, a full half-range (2) away: distance 0.5
    mu[2] += 2.0  # agent 2 moved too, but it is held at its minimum size
    trainer.buffer.drop_oldest(np.array([False, False, True]), 0.5)
    trainer._adapt_buffer()
    assert trainer.policy_distance == pytest.approx([0.5, 0.0, 0.5])
    assert trainer.buffer.sizes.tolist() == [90, 100, 50]


def test_rlx2_trains_switches_to_n_step_and_shrinks_its_buffer(tmp_path, monkeypatch):
    drawn = []  # (updates so far, n) of every training batch
    sample = ReplayBuffer.sample

    def recording(self, batch, generator, n_step=1, gamma=0.99):
        if batch == config.td3.batch_size:
            drawn.append(n_step)
        return sample(self, batch, generator, n_step, gamma)

    monkeypatch.setattr(ReplayBuffer, "sample", recording)
    config = tiny_config(
        tmp_path,
        algo="rlx2-td3",
        steps=600,
        density=0.3,
        update_period=50,
        buffer_check_every=50,
        buffer_min_size=150,
        buffer_policy_distance=1e-6,
        n_step_start=0.5,
    )
    summary = train(config)
    metrics = pd.read_csv(tmp_path / "train_metrics.csv")
    sizes = dict(zip(metrics["step"], metrics["replay_size"], strict=True))
    assert sizes[100] == 100  # drops begin after the warm-up, ...
    assert all(sizes[step] >= 150 - 15 for step in range(200, 601, 100))  # ... above the minimum
    assert sizes[600] < 400 and metrics["policy_distance"].dropna().gt(0).all()
    assert drawn == [1] * 250 + [3] * 250  # n-step from half of the 500 learning steps on
    assert np.isfinite(summary["final_return"]["mean"])


def test_an_extension_keeps_multi_step_targets_on(tmp_path, monkeypatch):
    """The switch point follows --steps: extended from 300 to 900 steps, a run that had trained
    with 3-step targets for 100 updates went back to one-step targets for 300 more."""
    drawn = []
    sample = ReplayBuffer.sample

    def recording(self, batch, generator, n_step=1, gamma=0.99):
        if batch == 32:  # a training batch, not the dormant or buffer checks'
            drawn.append(n_step)
        return sample(self, batch, generator, n_step, gamma)

    monkeypatch.setattr(ReplayBuffer, "sample", recording)
    config = tiny_config(tmp_path, algo="td3", steps=300, n_step=3, n_step_start=0.5)
    train(config)
    assert drawn == [1] * 100 + [3] * 100
    drawn.clear()
    extended = replace(TrainConfig.load(tmp_path), resume=True, steps=900)
    train(extended)
    assert drawn == [3] * 600
    # a fresh run of 900 steps switches at half its learning steps, as before
    drawn.clear()
    train(tiny_config(tmp_path / "long", algo="td3", steps=900, n_step=3, n_step_start=0.5))
    assert drawn == [1] * 400 + [3] * 400


def test_a_loaded_configuration_starts_nothing_by_itself(tmp_path):
    """config.json keeps the flags of the start that wrote it: after one resume, load() gave
    resume=True, and auto_resume=True on it was refused as 'resume or auto_resume, not both'."""
    config = tiny_config(tmp_path, algo="td3", steps=300)
    assert train(config, stop_after=150) is None
    assert train(replace(TrainConfig.load(tmp_path), resume=True), stop_after=200) is None
    loaded = TrainConfig.load(tmp_path)
    assert (loaded.resume, loaded.auto_resume) == (False, False)
    assert train(replace(loaded, auto_resume=True))["steps"] == 300
