"""Both the dense and the dynamic sparse agent clearly learn a cheap task (Pendulum-v1)."""

import csv

import numpy as np
import pytest

from dstrl.agents.td3 import TD3Config
from dstrl.train import train
from tests.helpers import tiny_config

# Pendulum-v1: an untrained policy scores about -1200 to -1500; a good one about -150.
LEARNED = -500


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3", "ds-td3"])
def test_learns_pendulum(tmp_path, algo):
    sparse = {} if algo == "td3" else {"lambdas": (1.0, 16.0), "update_period": 250}
    summary = train(
        tiny_config(
            tmp_path / algo,
            algo=algo,
            steps=9_000,
            start_steps=1_000,
            eval_every=1_000,
            eval_episodes=5,
            seeds=2,
            td3=TD3Config(hidden_sizes=(64, 64)),
            **sparse,
        )
    )
    with (tmp_path / algo / "evaluations.csv").open() as f:
        rows = [(int(r["step"]), float(r["return"])) for r in csv.DictReader(f)]
    first = np.mean([r for step, r in rows if step == 1_000])
    last = np.mean([r for step, r in rows if step >= 7_000])  # last 3 evaluations, both seeds
    assert first < -900, first
    assert last > LEARNED, last
    if algo == "ds-td3":
        assert 0.3 < summary["params"]["ratio"] < 0.7
