"""Mixed-method populations: members of one stacked population that differ in method."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from tqdm import tqdm

from dstrl.analysis.report import collect, sparse_methods, write_report
from dstrl.analysis.runs import load_runs
from dstrl.checkpoint import load_checkpoint, save_checkpoint
from dstrl.config import ConfigError
from dstrl.logs import TensorBoard
from dstrl.train import Trainer, build_agent, train
from tests.helpers import tiny_config

MIXED = ("td3", "static-td3", "ds-td3")


def _masks(agent):
    return [m.clone() for m in agent.actor_sparse.masks + agent.critic_sparse.masks]


def test_each_member_keeps_its_own_method(tmp_path):
    """Agents 0-1 dense, 2-3 static, 4-5 SET: masks, counts and costs as in runs of their own."""
    config = tiny_config(tmp_path / "mixed", algo=MIXED, seeds=2, density=0.3)
    agent = build_agent(config)
    alone = build_agent(tiny_config(tmp_path / "alone", algo="static-td3", seeds=2, density=0.3))
    before = _masks(agent)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights of every kind, so that SET has something to drop
        for w in [*agent.actor.weights, *agent.critic.weights]:
            w.mul_(torch.rand(w.shape, generator=g))
    for step in range(1, 4):
        moved = agent.actor_sparse.update_topology(0.3, step)
        moved += agent.critic_sparse.update_topology(0.3, step)
        for per_row in moved:  # connections replaced, counted for each row of members
            rows = len(per_row) // 6  # 1 for the actor, 2 for the twin critics
            assert per_row[: 4 * rows] == [0] * 4 * rows and min(per_row[4 * rows :]) > 0
    after = _masks(agent)
    for b, a, single in zip(before, after, _masks(alone), strict=True):
        rows = b.shape[0] // 6  # 1 for the actor, 2 for the twin critics
        dense, static, dynamic = (slice(k * 2 * rows, (k + 1) * 2 * rows) for k in range(3))
        assert b[dense].all() and a[dense].all()  # dense members: every connection, for good
        assert torch.equal(b[static], a[static])  # static members: masks never change
        assert not torch.equal(b[dynamic], a[dynamic])  # SET members: they do, ...
        counts = a.sum((-2, -1))
        assert torch.equal(counts[dynamic], b.sum((-2, -1))[dynamic])  # ... count for count
        assert torch.equal(counts[static], single.sum((-2, -1)))  # as a static run's
        assert torch.equal(counts[dynamic], single.sum((-2, -1)))
    costs = [agent.cost(members=slice(2 * k, 2 * k + 2)) for k in range(3)]
    assert costs[0] == agent.cost(dense=True)
    assert costs[1] == costs[2] == alone.cost()
    for w, m in zip(agent.actor_sparse.weights, agent.actor_sparse.masks, strict=True):
        assert (w[~m] == 0).all()


def test_a_mixed_population_reports_each_method(tmp_path):
    config = tiny_config(tmp_path / "run", algo=MIXED, seeds=2, density=0.3)
    summary = train(config)
    assert summary["algo"] == list(MIXED) and summary["seeds"] == [0, 1] * 3
    assert list(summary["methods"]) == list(MIXED)
    for name, method in summary["methods"].items():
        assert method["algo"] == name and method["seeds"] == [0, 1]
        assert len(method["final_return"]["per_seed"]) == 2
    assert summary["methods"]["td3"]["params"]["ratio"] == 1.0
    assert summary["methods"]["ds-td3"]["params"]["ratio"] < 0.9
    assert summary["methods"]["td3"]["layer_density"] == {}  # as in a td3 run of its own
    assert 0 < max(summary["methods"]["ds-td3"]["layer_density"].values()) < 1
    sparse_flops = summary["methods"]["static-td3"]["flops"]["run_total"]
    assert sparse_flops < summary["methods"]["td3"]["flops"]["run_total"]
    evaluations = pd.read_csv(tmp_path / "run" / "evaluations.csv")
    assert evaluations.groupby("method")["member"].unique().map(list).to_dict() == {
        "td3": [0, 1],
        "static-td3": [2, 3],
        "ds-td3": [4, 5],
    }
    table = write_report([tmp_path / "run"], tmp_path / "report").set_index("method")
    assert sorted(table.index) == sorted(MIXED) and (table["seeds"] == 2).all()
    assert table.loc["td3", "params_ratio"] == 1.0 and table.loc["ds-td3", "baseline"] == "td3"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["algo"] == list(MIXED)
    metrics = pd.read_csv(tmp_path / "run" / "train_metrics.csv")
    assert (metrics["density/critic1@td3"] == 1.0).all()  # each method's own columns
    assert (metrics["density/critic1@ds-td3"] < 0.5).all()
    assert (metrics["flops@td3"] > metrics["flops@static-td3"]).iloc[1:].all()  # once learning
    changed = metrics[[f"connections_changed@{algo}" for algo in MIXED]]
    assert (changed.sum(axis=1) == metrics["connections_changed"]).all()
    assert (changed["connections_changed@ds-td3"] > 0).any()
    assert (changed.drop(columns="connections_changed@ds-td3") == 0).all(axis=None)
    drawn = sparse_methods(collect(load_runs(tmp_path / "run")), "Pendulum-v1")
    assert [r.method for r in drawn] == ["ds-td3", "static-td3"]  # not dense td3, at density 1
    assert all("connections_changed" in r.runs[0].metrics for r in drawn)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "dormant_Pendulum-v1.png" in report and "topology_Pendulum-v1.png" in report


def test_a_mixed_population_shows_each_method_while_it_trains(tmp_path, monkeypatch):
    """TensorBoard and the progress bar give each method's mean evaluation return, beside the
    population's, so that the methods can be compared while they train."""
    logged, shown = [], []
    monkeypatch.setattr(TensorBoard, "scalars", lambda self, values, step: logged.append(values))
    monkeypatch.setattr(tqdm, "set_postfix", lambda self, values, refresh: shown.append(values))
    config = tiny_config(tmp_path / "run", algo=("td3", "ds-td3"), seeds=2, density=0.3)
    train(config)
    evaluations = pd.read_csv(tmp_path / "run" / "evaluations.csv")
    last = evaluations[evaluations["step"] == config.steps]
    means = last.groupby("method")["return"].mean()
    returns = [values for values in logged if "eval/return_mean" in values][-1]
    assert returns["eval/return_mean"] == pytest.approx(last["return"].mean())
    for algo in ("td3", "ds-td3"):
        assert returns[f"eval/return_mean@{algo}"] == pytest.approx(means[algo])
        assert shown[-1][algo] == f"{means[algo]:.1f}"
    assert list(shown[-1]) == ["td3", "ds-td3"]


def test_one_method_writes_its_summary_under_methods_too(tmp_path):
    summary = train(tiny_config(tmp_path / "run", algo="static-td3", steps=200, eval_every=100))
    alone = {k: v for k, v in summary.items() if k != "methods"}
    assert summary["methods"] == {"static-td3": alone}
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_one_algorithm_alone_is_an_ordinary_run(tmp_path):
    config = tiny_config(tmp_path, algo=("ds-td3",))
    assert config.algo == "ds-td3" and config.members == config.seeds


@pytest.mark.parametrize(
    ("algos", "message"),
    [
        (("td3", "ds-sac"), "mixes the sac and td3 families"),
        (("td3", "td3"), "names an algorithm twice"),
        (("td3", "prune-td3"), "prune-td3 cannot share a population"),
        (("ds-td3", "rlx2-td3"), "rlx2-td3 cannot share a population"),
    ],
)
def test_populations_that_cannot_be_are_refused(tmp_path, algos, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, algo=algos).validate()


def test_a_diverged_member_is_left_out_of_its_own_method_only(tmp_path):
    config = tiny_config(tmp_path / "run", algo=("td3", "ds-td3"), seeds=2, density=0.3)
    summary = train(config)
    path = tmp_path / "run" / "summary.json"
    summary["diverged"] = [{"member": 3, "seed": 1, "step": 200, "reason": "a test"}]
    path.write_text(json.dumps(summary))
    table = write_report([tmp_path / "run"], tmp_path / "report").set_index("method")
    assert table.loc["td3", "seeds"] == 2 and table.loc["ds-td3", "seeds"] == 1
    assert np.isfinite(table.loc["ds-td3", "final_mean"])


def test_a_diverged_member_is_named_with_its_method(tmp_path, capsys):
    config = tiny_config(tmp_path, algo=("td3", "ds-td3"), seeds=2, density=0.3)
    trainer = Trainer(config, build_agent(config), None)
    trainer._halt(np.array([False, False, True, False]), "a test", step=7)
    assert "member 2 (ds-td3, seed 0) at step 7: a test" in capsys.readouterr().err
    assert trainer.health.state_dict()[0]["method"] == "ds-td3"


def test_a_checkpoint_that_counted_all_changes_together_resumes(tmp_path):
    """Checkpoints of earlier versions hold one number of connections changed for all
    algorithms: a resume counts it with the first algorithm's, and the total stays right."""
    run = tmp_path / "run"
    config = tiny_config(run, algo=("td3", "ds-td3"), seeds=2, density=0.3, log_every=50)
    assert train(config, stop_after=175) is None
    state = load_checkpoint(run)
    assert state["changed"] == [0, 0]  # at a checkpoint between two log rows
    save_checkpoint(dict(state, changed=7), run)
    assert train(replace(config, resume=True)) is not None
    metrics = pd.read_csv(run / "train_metrics.csv").set_index("step")
    resumed = metrics.loc[200]  # ds-td3's change at update 100, and the 7
    assert resumed["connections_changed@td3"] == 7
    assert resumed["connections_changed"] == 7 + resumed["connections_changed@ds-td3"]
