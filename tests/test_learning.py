"""Dense and dynamic sparse agents of both families clearly learn a cheap task (Pendulum-v1)."""

import csv

import numpy as np
import pytest

from dstrl.agents.sac import SACConfig
from dstrl.agents.td3 import TD3Config
from dstrl.train import train
from tests.helpers import tiny_config

# Pendulum-v1: an untrained policy scores about -1200 to -1500; a good one about -150.
LEARNED = -500


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3", "ds-td3", "sac", "ds-sac"])
def test_learns_pendulum(tmp_path, algo):
    sparse = {}
    if algo.startswith("ds-"):  # about half the hidden weights (λ sized to the width)
        hidden = 16.0 if algo == "ds-td3" else 32.0
        sparse = {"lambdas": (1.0, hidden), "update_period": 250}
    summary = train(
        tiny_config(
            tmp_path / algo,
            algo=algo,
            steps=12_000,  # at 9k a sparse seed still fails now and then: seed luck, not a bug
            start_steps=1_000,
            eval_every=1_000,
            eval_episodes=5,
            seeds=2,
            td3=TD3Config(hidden_sizes=(64, 64)),
            # soft updates and lr 1e-3: the appendix's hard copy every 1000 steps is slow on so
            # few steps
            sac=SACConfig(
                (128, 128), learning_rate=1e-3, batch_size=64, tau=0.005, target_update_interval=1
            ),
            **sparse,
        )
    )
    with (tmp_path / algo / "evaluations.csv").open() as f:
        rows = [(int(r["step"]), float(r["return"])) for r in csv.DictReader(f)]
    first = np.mean([r for step, r in rows if step == 1_000])
    last = np.mean([r for step, r in rows if step >= 10_000])  # last 3 evaluations, both seeds
    assert first < -900, first
    assert last > LEARNED, last
    if algo.startswith("ds-"):
        assert 0.3 < summary["params"]["ratio"] < 0.7
