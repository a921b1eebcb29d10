"""Divergence: detected within a log interval, halted per agent, never checkpointed."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from dstrl.analysis.report import write_report
from dstrl.cli import main
from dstrl.health import DivergedError
from dstrl.train import build_agent, train
from tests.helpers import tiny_config


def _rows(run_dir, name):
    with (run_dir / name).open() as f:
        return list(csv.DictReader(f))


def _finite(value) -> bool:
    if torch.is_tensor(value):
        return bool(value.isfinite().all()) if value.is_floating_point() else True
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or np.isfinite(value)


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(tmp_path, capsys):
    # the reproduction, shortened: learning starts at step 500, after a checkpoint
    out = tmp_path / "run"
    args = ["train", "--env", "Pendulum-v1", "--steps", "3000", "--start-steps", "500"]
    args += ["--td3.learning-rate", "1e8", "--checkpoint-every", "250", "--eval-every", "250"]
    args += ["--eval-episodes", "1", "--no-progress", "--no-tensorboard", "--out", str(out)]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dstrl: error: training diverged")
    assert "member 0 (seed 0) at step 50" in err  # within the first log interval of learning
    assert "checkpoint of step 500 is kept" in err and "--td3.learning-rate (now 1e+08)" in err
    state = torch.load(out / "checkpoint.pt")
    assert state["step"] == 500 and _finite(state)
    assert not (out / "summary.json").exists()
    assert [int(r["step"]) for r in _rows(out, "evaluations.csv")] == [250, 500]


def _poison(run_dir, member):
    """Make one agent's first critic layer NaN in the checkpoint, as a blow-up would."""
    state = torch.load(run_dir / "checkpoint.pt")
    state["agent"]["critic"]["weights.0"][2 * member] = float("nan")
    torch.save(state, run_dir / "checkpoint.pt")


@pytest.mark.parametrize(
    ("algo", "extra"),
    [("ds-td3", {}), ("ds-td3", {"grow": "gradient"}), ("prune-td3", {}), ("ds-sac", {})],
)
def test_one_diverged_agent_does_not_cost_the_others_anything(tmp_path, capsys, algo, extra):
    settings = dict(algo=algo, seeds=3, steps=500, eval_every=100, checkpoint_every=100, **extra)
    clean = train(tiny_config(tmp_path / "clean", **settings))
    assert train(tiny_config(tmp_path / "bad", **settings), stop_after=200) is None
    _poison(tmp_path / "bad", member=1)
    summary = train(tiny_config(tmp_path / "bad", **settings, resume=True))
    # the others are bit for bit what they would have been
    good = [r for r in _rows(tmp_path / "clean", "evaluations.csv") if r["member"] != "1"]
    assert [r for r in _rows(tmp_path / "bad", "evaluations.csv") if r["member"] != "1"] == good
    assert summary["final_return"]["per_seed"][::2] == clean["final_return"]["per_seed"][::2]
    # the diverged one: recorded where it happened, no evaluation after it, halted and finite
    (event,) = summary["diverged"]
    assert (event["member"], event["seed"]) == (1, 1) and 200 < event["step"] <= 300
    assert "NaN or infinite" in event["reason"]
    assert summary["final_return"]["per_seed"][1] is None
    rows = _rows(tmp_path / "bad", "evaluations.csv")
    assert [int(r["step"]) for r in rows if r["member"] == "1"] == [100, 200]
    assert json.loads((tmp_path / "bad" / "summary.json").read_text())["diverged"] == [event]
    state = torch.load(tmp_path / "bad" / "checkpoint.pt")
    assert _finite(state) and state["diverged"] == [event]
    assert (state["agent"]["actor"]["weights.1"][1] == 0).all()
    assert "member 1 (seed 1)" in capsys.readouterr().err  # said when it happened
    # the report pools the agents that finished, and names the one left out
    table = write_report([tmp_path / "bad"], tmp_path / "report")
    assert table.loc[0, "seeds"] == 2
    assert table.loc[0, "final_mean"] == pytest.approx(
        np.mean(summary["final_return"]["per_seed"][::2])
    )
    assert "left out, diverged: seed(s) 1" in (tmp_path / "report" / "report.md").read_text()


def test_a_partly_diverged_run_finishes_and_exits_3(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--env", "Pendulum-v1", "--seeds", "2", "--steps", "400"]
    args += ["--start-steps", "100", "--eval-every", "200", "--eval-episodes", "1"]
    args += ["--checkpoint-every", "200", "--td3.hidden-sizes", "32", "32", "--lambdas", "1", "8"]
    args += ["--no-progress", "--no-tensorboard", "--out", str(out)]
    assert main([*args, "--steps", "200"]) == 0
    _poison(out, member=0)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 3
    captured = capsys.readouterr()
    assert "final return" in captured.out and "over 1 seed(s)" in captured.out
    assert "1 of 2 agents diverged (member 0 (seed 0) at step 20" in captured.err.splitlines()[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 400 and [e["member"] for e in summary["diverged"]] == [0]
    assert main(["eval", str(out), "--episodes", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ds-td3 seed 0: diverged in training (halted; see summary.json)"
    assert lines[1].startswith("ds-td3 seed 1: return") and len(lines) == 2  # no mean of one
    policy = str(tmp_path / "p.safetensors")
    assert main(["export", str(out), "--out", policy, "--member", "0"]) == 2
    assert "diverged and was halted" in capsys.readouterr().err
    assert not (tmp_path / "p.safetensors").exists()


def test_a_method_whose_every_agent_diverged_is_named_and_the_others_reported(tmp_path, capsys):
    """In a mixed population the other methods go on: the summary held NaN (not JSON) for the
    diverged method, with numpy's warnings, and no report could be made of the others."""
    out = tmp_path / "run"
    args = ["train", "--env", "Pendulum-v1", "--algo", "td3", "ds-td3", "--seeds", "2"]
    args += ["--steps", "400", "--start-steps", "100", "--eval-every", "200"]
    args += ["--eval-episodes", "1", "--checkpoint-every", "200", "--td3.hidden-sizes", "32", "32"]
    args += ["--lambdas", "1", "8", "--log-every", "100", "--no-progress", "--no-tensorboard"]
    args += ["--out", str(out)]
    assert main([*args, "--steps", "200"]) == 0
    _poison(out, member=2)
    _poison(out, member=3)  # both ds-td3 agents
    capsys.readouterr()
    assert main([*args, "--resume"]) == 3
    captured = capsys.readouterr()
    assert "ds-td3 on Pendulum-v1: every agent diverged; params" in captured.out
    assert "td3 on Pendulum-v1: final return" in captured.out
    assert captured.err.splitlines()[-1].startswith("dstrl: error: 2 of 4 agents diverged")
    assert "Warning" not in captured.err  # numpy's, of the means of no agent

    def refuse(constant):
        raise AssertionError(f"summary.json holds {constant}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    methods = summary["methods"]
    assert methods["ds-td3"]["final_return"] == {"mean": None, "std": None, "per_seed": [None] * 2}
    assert [e["member"] for e in methods["ds-td3"]["diverged"]] == [2, 3]
    assert methods["td3"]["diverged"] == [] and methods["td3"]["final_return"]["mean"] is not None
    assert [e["member"] for e in summary["diverged"]] == [2, 3]
    last = _rows(out, "train_metrics.csv")[-1]  # each method's columns are over its live agents
    assert last["replay_size@ds-td3"] == last["critic_loss@ds-td3"] == ""
    assert float(last["replay_size@td3"]) == 400
    table = write_report([out], tmp_path / "report")
    assert table["method"].tolist() == ["td3"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "(ds-td3); left out, every agent diverged: seed(s) 0, 1" in report


def test_a_halted_agent_holds_still_at_zero_and_keeps_its_masks(tmp_path):
    halted, twin = (
        build_agent(tiny_config(tmp_path / "x", seeds=2, update_period=5)) for _ in "ab"
    )
    masks = [m.clone() for m in halted.critic_sparse.masks + halted.actor_sparse.masks]
    halted.halt(torch.tensor([False, True]))
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # topology updates at 5, 10, ...
        obs = torch.randn(2, 16, 3, generator=g)
        action = torch.rand(2, 16, 1, generator=g) * 4 - 2
        batch = (obs, action, torch.randn(2, 16, generator=g), obs, torch.zeros(2, 16))
        halted.update(*batch)
        twin.update(*batch)
    for part in ("actor weights", "critic weights"):  # with targets and optimiser moments
        for (tensor, rows), (other, _) in zip(
            halted._member_tensors()[part], twin._member_tensors()[part], strict=True
        ):
            assert (tensor[rows : 2 * rows] == 0).all()  # member 1 holds still at zero
            assert torch.equal(tensor[:rows], other[:rows])  # member 0 as if alone
    after = halted.critic_sparse.masks + halted.actor_sparse.masks
    for rows, before, now in zip([2, 2, 1, 1], masks, after, strict=True):
        assert torch.equal(before[rows:], now[rows:])  # member 1's masks never change
        assert not torch.equal(before[:rows], now[:rows])  # member 0's do
    assert not any(bad.any() for bad in halted.nonfinite().values())
    assert (halted.pop_losses()["critic_loss"][1] == 0).all()


def test_when_every_agent_diverges_no_checkpoint_replaces_the_last_good_one(tmp_path):
    config = tiny_config(tmp_path / "run", seeds=2, steps=400, checkpoint_every=100)
    train(config, stop_after=200)
    for member in (0, 1):
        _poison(tmp_path / "run", member)
    poisoned = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(DivergedError, match="training diverged .*checkpoint of step 200 is kept"):
        train(tiny_config(tmp_path / "run", seeds=2, steps=400, checkpoint_every=100, resume=True))
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == poisoned


class BrokenPendulum(PendulumEnv):
    """Pendulum whose training episodes seeded 1 return a reward too large for float32 (finite
    as a float64) from step 150 on."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.broken = seed == 1
        self.t = 0
        return super().reset(seed=seed, options=options)

    def step(self, u):
        obs, reward, terminated, truncated, info = super().step(u)
        self.t += 1
        reward = 1e39 if self.broken and self.t >= 150 else reward
        return obs, reward, terminated, truncated, info


def test_an_environment_out_of_float32_range_halts_its_agent_only(tmp_path):
    gym.register("BrokenPendulum-v0", entry_point=BrokenPendulum, max_episode_steps=200)
    try:
        summary = train(tiny_config(tmp_path / "run", env="BrokenPendulum-v0", seeds=2))
    finally:
        del gym.registry["BrokenPendulum-v0"]
    (event,) = summary["diverged"]
    assert (event["member"], event["step"]) == (1, 150)
    assert event["reason"] == "its environment returned a NaN or infinite observation or reward"
    assert np.isfinite(summary["final_return"]["per_seed"][0])
    state = torch.load(tmp_path / "run" / "checkpoint.pt")
    assert _finite(state)  # the infinity never reached the replay buffer
