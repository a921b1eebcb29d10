"""Metrics against hand-computed values, and the report on synthetic run directories."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dstrl.analysis.metrics import (
    final_return,
    iqm,
    learning_curve_area,
    steps_to_threshold,
    stratified_bootstrap_ci,
)
from dstrl.analysis.report import _agent_mean, write_report
from dstrl.analysis.runs import RunError
from dstrl.config import TrainConfig
from tests.helpers import imported_by


def test_final_return_and_lca_by_hand():
    curve = np.arange(1.0, 13.0)  # 12 evaluations: 1..12
    assert final_return(curve) == np.mean(np.arange(3.0, 13.0))  # the last 10: 3..12 -> 7.5
    assert learning_curve_area(np.full(200, 5_000.0)) == 1.0  # 200 x 5000 / 1e6


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: final_return([1.0, 2.0, 3.0], last=0), "last must be at least 1"),  # all three
        (lambda: final_return(np.ones((3, 20))), r"one seed's curve .* not an array of \(3, 20\)"),
        (lambda: steps_to_threshold([5, 10], [1, 5, 9], 9), "2 steps for a curve of 3"),
        (lambda: stratified_bootstrap_ci([np.ones(3)], confidence=95), "a fraction in"),
    ],
)
def test_the_metrics_refuse_what_they_would_compute_wrongly(call, message):
    """Each gave a number of something else (the whole curve, every seed pooled) or failed
    inside NumPy."""
    with pytest.raises(ValueError, match=message):
        call()


def test_iqm_drops_the_outer_quartiles():
    assert iqm(np.array([0.0, 10.0, 20.0, 1000.0])) == 15.0  # mean of the middle two
    assert iqm(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])) == 4.5  # mean of 3..6


def test_bootstrap_interval_bounds():
    low, high = stratified_bootstrap_ci([np.full(5, 3.0)])
    assert low == high == 3.0  # no spread, no width
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    low, high = stratified_bootstrap_ci([values], statistic=np.mean, resamples=20_000)
    assert low < 3.5 < high
    assert low >= 0.0 and high <= 7.0  # inside the data's range
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(8), rel=0.15)


def test_stratified_bootstrap_keeps_each_group_whole():
    # two tasks with 2 and 6 seeds: every resample has 2 values near 0 and 6 near 100
    low, high = stratified_bootstrap_ci([np.zeros(2), np.full(6, 100.0)], statistic=np.mean)
    assert low == high == 75.0


def test_steps_to_threshold_including_never():
    steps = np.array([10, 20, 30, 40])
    assert steps_to_threshold(steps, np.array([1.0, 5.0, 4.0, 9.0]), 5.0) == 20
    assert steps_to_threshold(steps, np.array([1.0, 2.0, 3.0, 4.0]), 5.0) is None


def test_a_flat_curve_reaches_its_own_final_return():
    """The mean of ten equal returns can round above them: the curve 'never' reached itself."""
    curve = np.full(20, 4350.724237877683)
    assert final_return(curve) > curve[0]
    assert steps_to_threshold(np.arange(20), curve, final_return(curve)) == 0
    assert steps_to_threshold(np.arange(20), curve, np.nextafter(curve[0], np.inf) + 1e-6) is None


def synthetic_run(path, algo, seed, curve, env="Toy-v0", steps=400, params_ratio=1.0):
    """A run directory as dstrl train writes it, with a given evaluation curve."""
    path.mkdir(parents=True)
    config = TrainConfig(algo=algo, env=env, steps=steps, seed=seed, out=path).to_json()
    (path / "config.json").write_text(json.dumps(config))
    grid = np.linspace(steps / len(curve), steps, len(curve)).astype(int)
    pd.DataFrame({"step": grid, "member": 0, "seed": seed, "return": curve}).to_csv(
        path / "evaluations.csv", index=False
    )
    summary = {
        "algo": algo,
        "env": env,
        "steps": steps,
        "seeds": [seed],
        "params": {"total": 100 * params_ratio, "dense_total": 100},
        "flops": {"run_total": 10 * params_ratio, "dense_run_total": 10},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    metrics = {"step": grid, "connections_changed": 5, "density/actor0": params_ratio}
    metrics.update({"dormant/actor_h1": 0.1 * seed, "dormant/critic_h1": 0.2})
    pd.DataFrame(metrics).to_csv(path / "train_metrics.csv", index=False)


def test_report_table_and_figures(tmp_path):
    runs = tmp_path / "runs"
    dense = [[0, 10, 20, 30], [0, 20, 40, 50]]  # final returns (all 4 evaluations): 15, 27.5
    sparse = [[0, 30, 40, 40], [10, 30, 50, 50]]  # mean curve 5, 30, 45, 45
    for seed, curve in enumerate(dense):
        synthetic_run(runs / "td3" / f"s{seed}", "td3", seed, curve)
    for seed, curve in enumerate(sparse):
        synthetic_run(runs / "ds" / f"s{seed}", "ds-td3", seed, curve, params_ratio=0.5)
    table = write_report([runs], tmp_path / "report").set_index("method")
    assert table.loc["td3", "seeds"] == 2 and table.loc["td3", "final_mean"] == 21.25
    assert table.loc["ds-td3", "final_mean"] == pytest.approx((27.5 + 35) / 2)
    # dense threshold 21.25: the dense mean curve (0, 15, 30, 40) reaches it at step 300,
    # the sparse one (5, 30, 45, 45) at step 200: one third fewer steps
    assert table.loc["ds-td3", "steps_to_baseline"] == 200
    assert table.loc["td3", "steps_to_baseline"] == 300
    assert table.loc["ds-td3", "step_saving_pct"] == pytest.approx(100 / 3)
    assert table.loc["ds-td3", "params_ratio"] == 0.5
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| Toy-v0 | ds-td3 | 2 | 400 | 31 ± 4 |" in report and "33%" in report
    assert "| 0.000125 ± 1.5e-05 | td3 | 200 | 33% |" in report  # LCA (110 and 140 / 10^6)
    for name in ("curves_Toy-v0.png", "topology_Toy-v0.png", "dormant_Toy-v0.png"):
        assert (tmp_path / "report" / name).stat().st_size > 10_000
    assert "![Toy-v0 dormant units](dormant_Toy-v0.png)" in report
    assert len(pd.read_csv(tmp_path / "report" / "report.csv")) == 2


def test_a_method_without_a_baseline_or_a_learning_step_shows_dashes(tmp_path):
    """A method without a dense run on its task showed "nan | never" where other rows had a
    baseline; a run that never left its warm-up (no FLOPs to compare) was called damaged."""
    runs = tmp_path / "runs"
    synthetic_run(runs / "td3", "td3", 0, [0, 10])
    synthetic_run(runs / "ds", "ds-td3", 0, [0, 20])
    synthetic_run(runs / "other", "ds-td3", 0, [0, 5], env="Other-v0")
    summary = runs / "other" / "summary.json"
    summary.write_text(
        json.dumps(
            dict(json.loads(summary.read_text()), flops={"run_total": 0, "dense_run_total": 0})
        )
    )
    write_report([runs], tmp_path / "report")
    rows = (tmp_path / "report" / "report.md").read_text().splitlines()
    other = next(row for row in rows if row.startswith("| Other-v0 | ds-td3 |"))
    assert other.endswith("| – | – | – | 1.00x | – |")
    toy = next(row for row in rows if row.startswith("| Toy-v0 | ds-td3 |"))
    assert toy.endswith("| td3 | 400 | 0% | 1.00x | 1.00x |")


def test_report_names_methods_by_what_differs(tmp_path):
    synthetic_run(tmp_path / "a", "ds-td3", 0, [1, 2])
    synthetic_run(tmp_path / "b", "ds-td3", 0, [1, 3])
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    config["drop_fraction"] = 0.2
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    table = write_report([tmp_path], tmp_path / "report")
    assert sorted(table["method"]) == ["ds-td3 (drop_fraction=0.05)", "ds-td3 (drop_fraction=0.2)"]
    assert table["baseline"].isna().all()  # no dense run: no steps-to-baseline


def _set(path, **settings):
    """Change a synthetic run's saved settings (``td3`` and ``sac`` as dicts of changes)."""
    config = json.loads((path / "config.json").read_text())
    for key, value in settings.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


def test_settings_a_run_never_reads_make_no_method(tmp_path):
    """The dynamic buffer's minimum (its default follows --steps) without a dynamic buffer, SAC's
    options in a TD3 run, sparsity in a dense one, topology updates in a static one and all but
    their period in gradual pruning do not tell runs apart; a TD3 option does."""
    for seed in range(3):
        synthetic_run(tmp_path / f"s{seed}", "ds-td3", seed, [1, 2])
    _set(tmp_path / "s1", buffer_min_size=300, sac={"learning_rate": 1e-3})
    _set(tmp_path / "s2", td3={"learning_rate": 1e-4})
    synthetic_run(tmp_path / "dense0", "td3", 0, [1, 2])  # sparsity means nothing to td3,
    synthetic_run(tmp_path / "dense1", "td3", 1, [1, 2])
    _set(tmp_path / "dense1", density=0.5, update_period=50)
    synthetic_run(tmp_path / "static0", "static-td3", 0, [1, 2])  # topology updates to static
    synthetic_run(tmp_path / "static1", "static-td3", 1, [1, 2])
    _set(tmp_path / "static1", drop_fraction=0.3)
    for seed in range(3):  # gradual pruning: the schedule sets how much, not η or growth
        synthetic_run(tmp_path / f"prune{seed}", "prune-td3", seed, [1, 2])
    _set(tmp_path / "prune1", drop_fraction=0.3, grow="gradient", freeze_last=0)
    _set(tmp_path / "prune2", update_period=500)  # its pruning period: another method
    table = write_report([tmp_path], tmp_path / "report").set_index("method")
    assert table.loc["ds-td3 (td3.learning_rate=0.001)", "seeds"] == 2  # the default
    assert table.loc["ds-td3 (td3.learning_rate=0.0001)", "seeds"] == 1
    assert table.loc["td3", "seeds"] == 2 and table.loc["static-td3", "seeds"] == 2
    assert table.loc["prune-td3 (update_period=1000)", "seeds"] == 2
    assert table.loc["prune-td3 (update_period=500)", "seeds"] == 1


def test_each_method_is_compared_with_the_dense_runs_of_its_own_settings(tmp_path):
    for algo in ("td3", "ds-td3"):
        for overlap in (False, True):
            synthetic_run(tmp_path / f"{algo}-{overlap}", algo, 0, [1, 2])
            _set(tmp_path / f"{algo}-{overlap}", overlap=overlap)
    table = write_report([tmp_path], tmp_path / "report").set_index("method")
    for overlap in (False, True):
        assert table.loc[f"ds-td3 (overlap={overlap})", "baseline"] == f"td3 (overlap={overlap})"
    # named by its algorithm, as the default is: "baseline 'td3' has no runs on Toy-v0"
    named = write_report([tmp_path], tmp_path / "report", baseline="td3").set_index("method")
    assert named["baseline"].equals(table["baseline"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| ds-td3 (overlap=True) | 1 | 400 |" in report
    assert "| td3 (overlap=True) | 400 |" in report  # the baseline column, then its steps
    _set(tmp_path / "ds-td3-True", td3={"learning_rate": 1e-4})  # matches neither dense run
    _set(tmp_path / "td3-False", td3={"learning_rate": 3e-4})
    with pytest.raises(RunError, match=r"ds-td3 .* on Toy-v0 could be compared with any of td3 "):
        write_report([tmp_path], tmp_path / "report")
    chosen = "td3 (overlap=True, td3.learning_rate=0.001)"
    assert set(write_report([tmp_path], tmp_path / "report", baseline=chosen)["baseline"]) == {
        chosen
    }


def test_a_report_written_over_another_leaves_none_of_its_figures(tmp_path):
    synthetic_run(tmp_path / "toy", "ds-td3", 0, [1, 2], params_ratio=0.5)
    synthetic_run(tmp_path / "other", "td3", 0, [1, 2], env="Other-v0")
    write_report([tmp_path / "toy"], tmp_path / "report")
    assert (tmp_path / "report" / "topology_Toy-v0.png").exists()
    (tmp_path / "report" / "notes.png").write_bytes(b"mine")
    write_report([tmp_path / "other"], tmp_path / "report")
    figures = [p.name for p in (tmp_path / "report").glob("*.png")]
    assert "curves_Other-v0.png" in figures and "notes.png" in figures
    assert not [name for name in figures if "Toy-v0" in name]


def test_report_errors(tmp_path):
    with pytest.raises(RunError, match="no dstrl runs found"):
        write_report([tmp_path], tmp_path / "report")
    synthetic_run(tmp_path / "a", "td3", 0, [1, 2], steps=400)
    synthetic_run(tmp_path / "b", "ds-td3", 0, [1, 2], steps=800)
    with pytest.raises(RunError, match="different step budgets"):
        write_report([tmp_path], tmp_path / "report")
    # one method's runs of two budgets: "evaluated at other steps", or with a seed in both,
    # "seed 0 is in both ... with the same settings"
    for seed in (0, 1):
        synthetic_run(tmp_path / f"c{seed}", "ds-td3", seed, [1, 2], steps=400)
        with pytest.raises(RunError, match=r"^ds-td3 on Toy-v0: its runs have different step bu"):
            write_report([tmp_path / "b", tmp_path / f"c{seed}"], tmp_path / "report")
    (tmp_path / "b" / "summary.json").unlink()
    with pytest.raises(RunError, match="not finished"):
        write_report([tmp_path], tmp_path / "report")
    with pytest.raises(RunError, match="baseline 'sac' has no runs"):
        write_report([tmp_path / "a"], tmp_path / "report", baseline="sac")
    (tmp_path / "afile").write_text("")  # was "[Errno 17] File exists"
    with pytest.raises(RunError, match=r"afile is a file, not a directory: choose another --out"):
        write_report([tmp_path / "a"], tmp_path / "afile")


def test_a_seed_in_two_runs_of_one_method_is_refused(tmp_path):
    """Packed and unpacked runs of one grid, say: the same seed and settings counted twice."""
    synthetic_run(tmp_path / "packed" / "td3", "td3", 0, [1, 2])
    synthetic_run(tmp_path / "td3" / "seed0", "td3", 0, [1, 2])
    synthetic_run(tmp_path / "td3" / "seed1", "td3", 1, [1, 2])
    with pytest.raises(RunError, match=r"td3 on Toy-v0: seed 0 is in both .*packed/td3 and "):
        write_report([tmp_path], tmp_path / "report")
    assert len(write_report([tmp_path / "td3"], tmp_path / "report")) == 1


def test_a_run_named_twice_is_one_run(tmp_path, monkeypatch):
    """A relative and an absolute path, or a link, to one run were its seeds counted twice."""
    synthetic_run(tmp_path / "td3", "td3", 0, [1, 2])
    (tmp_path / "link").symlink_to(tmp_path / "td3")
    monkeypatch.chdir(tmp_path)
    runs = [Path("td3"), tmp_path / "td3", tmp_path / "link"]
    assert write_report(runs, tmp_path / "report")["seeds"].tolist() == [1]
    # from Python, one path or several, as str or Path (str failed on .exists())
    assert len(write_report("td3", "report")) == len(write_report(["td3", "link"], "report")) == 1


def test_runs_of_older_versions_compare_by_the_defaults_they_used(tmp_path):
    """A config.json written before --n-step existed ran one-step targets: it is the same
    method as a new run at the default, and another than a run with --n-step 3."""
    for seed, (name, n_step) in enumerate((("old", None), ("new", 1), ("multi", 3))):
        synthetic_run(tmp_path / name, "ds-td3", seed, [1, 2])
        path = tmp_path / name / "config.json"
        config = json.loads(path.read_text())
        if n_step is None:
            del config["n_step"], config["replay"]
        else:
            config["n_step"] = n_step
        path.write_text(json.dumps(config))
    table = write_report([tmp_path], tmp_path / "report")
    assert sorted(table["method"]) == ["ds-td3 (n_step=1)", "ds-td3 (n_step=3)"]
    assert table.set_index("method").loc["ds-td3 (n_step=1)", "seeds"] == 2  # old and new pooled


@pytest.mark.parametrize(
    "last_line", ["400,0,0,abc", "400,0,0,", "40", "400.5,0,0,2", "400,0,0,inf", "400,0,0,-inf"]
)
def test_a_damaged_evaluations_csv_is_named_not_reported_as_nan(tmp_path, last_line):
    """A non-numeric return was a pandas traceback; a row cut short made the report nan ± nan."""
    run = tmp_path / "run"
    synthetic_run(run, "td3", 0, [1, 2])
    csv = run / "evaluations.csv"
    csv.write_text(csv.read_text().rsplit("\n", 2)[0] + f"\n{last_line}\n")
    with pytest.raises(RunError) as caught:
        write_report([run], tmp_path / "report")
    assert str(caught.value) == (
        f"{csv} line 3 is damaged ({last_line!r}); delete that line, or the run, and report again"
    )


def test_a_repeated_evaluation_is_named_not_averaged_in(tmp_path):
    """A (member, step) row twice, by an edit, was averaged with the first into the curve."""
    run = tmp_path / "run"
    synthetic_run(run, "td3", 0, [1, 2])
    csv = run / "evaluations.csv"
    csv.write_text(csv.read_text() + "400,0,0,99999.0\n")
    with pytest.raises(RunError) as caught:
        write_report([run], tmp_path / "report")
    assert str(caught.value) == (
        f"{csv} line 4 repeats an evaluation of an earlier line ('400,0,0,99999.0'); delete that "
        "line, or the run, and report again"
    )


def test_methods_evaluated_at_different_steps_are_refused(tmp_path):
    """A finer grid halved the 'steps to the baseline' and doubled the area."""
    synthetic_run(tmp_path / "td3", "td3", 0, [1, 2])
    synthetic_run(tmp_path / "ds", "ds-td3", 0, [1, 2, 3, 4])
    config = json.loads((tmp_path / "ds" / "config.json").read_text())
    (tmp_path / "ds" / "config.json").write_text(json.dumps({**config, "eval_every": 2500}))
    with pytest.raises(RunError) as caught:
        write_report([tmp_path], tmp_path / "report")
    assert str(caught.value) == (
        "runs on Toy-v0 were evaluated at different steps (ds-td3: every 2,500, td3: every "
        "5,000); their final returns, areas and steps to the baseline are not comparable: "
        "rerun with one --eval-every"
    )


@pytest.mark.parametrize("text", [b"step,critic_loss\n100,1\n200,1,2,3\n", b"step\n\xff\xfe\n"])
def test_a_damaged_train_metrics_csv_is_named(tmp_path, text):
    """A row with more fields than the header, or bytes that are not text, was a pandas
    traceback: the file sat outside the check of the run's other files."""
    run = tmp_path / "run"
    synthetic_run(run, "td3", 0, [1, 2])
    (run / "train_metrics.csv").write_bytes(text)
    with pytest.raises(
        RunError, match=rf"^{run / 'train_metrics.csv'} cannot be read \("
    ) as caught:
        write_report([run], tmp_path / "report")
    assert str(caught.value).endswith(
        "; it only draws the figures: delete it to report without them"
    )
    (run / "train_metrics.csv").unlink()
    assert write_report([run], tmp_path / "report")["seeds"].tolist() == [1]


@pytest.mark.parametrize(
    "file, edit, what",
    [
        ("summary.json", lambda s: [s], "not a JSON object"),
        ("summary.json", lambda s: dict(s, params={}), "its params.total"),
        (
            "summary.json",
            lambda s: {**s, "flops": {**s["flops"], "run_total": "a"}},
            "flops.run_total",
        ),
        (
            "summary.json",
            lambda s: {**s, "params": {**s["params"], "dense_total": 0}},
            "dense_total",
        ),
        (
            "summary.json",
            lambda s: {**s, "flops": {**s["flops"], "dense_run_total": 0}},
            "flops.dense_run_total",
        ),
        ("summary.json", lambda s: dict(s, diverged=[{"seed": 0}]), "its diverged list"),
        ("config.json", lambda c: {k: v for k, v in c.items() if k != "env"}, "its env"),
        ("config.json", lambda c: dict(c, algo=5, steps=None), "its algo, steps"),
    ],
)
def test_a_hand_edited_summary_or_config_is_named(tmp_path, file, edit, what):
    """A field the report reads, edited away, was a KeyError, TypeError or ZeroDivisionError
    traceback; a deleted env was reported under the default task."""
    run = tmp_path / "run"
    synthetic_run(run, "td3", 0, [1, 2])
    path = run / file
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(RunError, match=rf"^{path} is damaged \(.*{what}\); ") as caught:
        write_report([run], tmp_path / "report")
    fix = "--resume, or leave the run out" if file == "summary.json" else "or leave the run out"
    assert str(caught.value).endswith(fix)


def test_runs_of_one_method_on_other_evaluation_grids_are_refused(tmp_path):
    """They were two methods, td3 (eval_every=100) and td3 (eval_every=200), each its own
    baseline, where the README promises an error."""
    synthetic_run(tmp_path / "a", "td3", 0, [1, 2, 3, 4])
    synthetic_run(tmp_path / "b", "td3", 1, [1, 2])
    _set(tmp_path / "a", eval_every=100)
    _set(tmp_path / "b", eval_every=200)
    with pytest.raises(RunError, match="td3 on Toy-v0: .* was evaluated at other steps than"):
        write_report([tmp_path], tmp_path / "report")


def test_the_report_and_the_configuration_never_import_training():
    """Analysis never imports training: the configuration it reads imported torch, Numba and
    the agents (1.8 s before a report could start)."""
    assert imported_by("dstrl.analysis.report, dstrl.config") == []


def test_a_methods_ratios_and_dormant_shares_weigh_each_run_by_its_agents(tmp_path):
    """A run of three seeds and a run of one were averaged as two equal halves."""
    synthetic_run(tmp_path / "one", "ds-td3", 0, [1, 2], params_ratio=0.5)
    three = tmp_path / "three"
    synthetic_run(three, "ds-td3", 5, [1, 2], params_ratio=0.2)
    rows = [(step, m, 5 + m, 1.0) for step in (200, 400) for m in range(3)]
    pd.DataFrame(rows, columns=["step", "member", "seed", "return"]).to_csv(
        three / "evaluations.csv", index=False
    )
    (row,) = write_report([tmp_path], tmp_path / "report").itertuples()
    assert row.seeds == 4 and row.params_ratio == pytest.approx((0.5 + 3 * 0.2) / 4)
    one = pd.DataFrame({"step": [1, 2], "dormant/actor_h1": [0.4, 0.4]})
    others = pd.DataFrame({"step": [1, 2], "dormant/actor_h1": [0.0, None]})  # 3 agents
    mean = _agent_mean([one, others], [1, 3])
    assert mean["dormant/actor_h1"].tolist() == [pytest.approx(0.1), pytest.approx(0.4)]


def test_a_report_that_cannot_be_written_names_where(tmp_path, monkeypatch):
    """A full disk was "No space left on device", naming no file, after report.csv was half
    written in place."""
    import errno

    from matplotlib.figure import Figure

    synthetic_run(tmp_path / "runs" / "td3", "td3", 0, [0, 10, 20, 30])

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(RunError, match=r"^cannot write the report into .*report: No space left"):
        write_report([tmp_path / "runs"], tmp_path / "report")


def test_a_damaged_summary_says_how_to_write_it_again(tmp_path):
    synthetic_run(tmp_path / "run", "td3", 0, [0, 10, 20, 30])
    (tmp_path / "run" / "summary.json").write_text('{"algo": "td')  # cut short by a crash
    with pytest.raises(RunError, match=r"write it again with dstrl train --out .*run --resume"):
        write_report([tmp_path / "run"], tmp_path / "report")
