"""Tiny training configurations that run in seconds, and what tests compare runs with."""

import subprocess
import sys
from pathlib import Path

import torch

from dstrl.agents.sac import SACConfig
from dstrl.agents.td3 import TD3Config
from dstrl.config import TrainConfig
from dstrl.train import Trainer, build_agent

TRAINING = ("torch", "numba", "gymnasium", "dstrl.agents.base", "dstrl.nets")


def imported_by(modules: str) -> list[str]:
    """Which of TRAINING a fresh interpreter has imported after ``import {modules}``."""
    code = f"import sys, {modules}; print(*(m for m in {TRAINING!r} if m in sys.modules))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    return imported.stdout.split()


RLX2_TINY = dict(
    buffer_check_every=50, buffer_min_size=100, buffer_policy_distance=1e-6, n_step_start=0.3
)
# (algo, settings) of every kind of update: methods, growth, ReDo, targets, n-step, mixtures
UPDATE_KINDS = [
    ("td3", {}),
    # the first actor step after the warm-up (Adam's moments of the actor created then)
    ("td3", {"td3": TD3Config((32, 32), batch_size=32, policy_delay=4)}),
    ("static-td3", {}),
    ("ds-td3", {}),
    ("ds-td3", {"grow": "gradient", "redo_period": 40}),
    ("ds-td3", {"target_sparsity": "online-mask"}),
    ("prune-td3", {}),
    ("rlx2-td3", RLX2_TINY),
    ("sac", {}),
    ("ds-sac", {"sac": SACConfig((32, 32), batch_size=32, tau=0.05, target_update_interval=1)}),
    (("td3", "static-td3", "ds-td3"), {}),
]


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


def learning_trainer(out: Path, algo, **settings) -> Trainer:
    """A tiny run of two seeds, stepped through its random warm-up: its next step learns."""
    out.mkdir()
    config = tiny_config(out, algo=algo, seeds=2, **settings)
    trainer = Trainer(config, build_agent(config), None)
    while trainer.step < config.start_steps:
        trainer._step_envs(*trainer._begin_step())
    return trainer


def assert_same(a, b):
    """Networks, targets, masks, target supports and optimiser moments, recursively."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def lock_holder(run: Path) -> subprocess.Popen:
    """Another process, holding ``run``'s writer lock for a minute, as a training run does."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from dstrl.rundir import exclusive\n"
            f"with exclusive(Path({str(run)!r})):\n    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder
