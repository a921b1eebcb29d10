"""`dstrl report`: the paper's table and figures from any set of finished runs.

Runs are grouped by task (environment) and method (algorithm plus whatever setting tells runs
of that algorithm apart); seeds from several run directories of one method are pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dstrl.analysis.metrics import (
    final_return,
    iqm,
    learning_curve_area,
    steps_to_threshold,
    stratified_bootstrap_ci,
)
from dstrl.analysis.runs import (
    Run,
    RunError,
    differing,
    find_runs,
    label_methods,
    load_runs,
    method_settings,
)
from dstrl.config import family_of
from dstrl.rundir import describe, write_atomic

FIGURES = ("curves", "topology", "dormant")  # written as <figure>_<task>.png


@dataclass
class MethodCurves:
    """All seeds of one method on one task."""

    env: str
    method: str
    algo: str
    steps: np.ndarray  # evaluation steps
    returns: np.ndarray  # (seeds, evaluations)
    runs: list[Run]

    @property
    def finals(self) -> np.ndarray:
        return np.array([final_return(curve) for curve in self.returns])

    @property
    def budget(self) -> int:
        return self.runs[0].config["steps"]

    def ratio(self, section: str, key: str, dense_key: str) -> float:
        """A count over its dense count, averaged over the agents of the runs; NaN where there
        is none (the FLOPs of a run that never left its random warm-up)."""
        counts = [(r.summary[section][key], r.summary[section][dense_key]) for r in self.runs]
        ratios = [count / dense if dense else np.nan for count, dense in counts]
        return float(np.average(ratios, weights=[agents(r) for r in self.runs]))


def agents(run: Run) -> int:
    """The agents a run pools: its seeds that did not diverge (of its method)."""
    return run.evaluations["member"].nunique()


def collect(runs: list[Run]) -> list[MethodCurves]:
    """Pool the seeds of every (task, method); evaluation grids and budgets must agree."""
    label_methods(runs)
    if all(run.all_diverged for run in runs):
        raise RunError(
            f"every agent of {', '.join(sorted({str(r.path) for r in runs}))} diverged: nothing "
            "to report"
        )
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in (run for run in runs if not run.all_diverged):
        groups.setdefault((run.env, run.method), []).append(run)
    results = []
    for (env, method), group in sorted(groups.items()):
        by_budget = {run.config["steps"]: run.path for run in group}
        if len(by_budget) > 1:  # before its seeds and grid, which a budget changes too
            listed = ", ".join(f"{steps:,} in {path}" for steps, path in sorted(by_budget.items()))
            raise RunError(
                f"{method} on {env}: its runs have different step budgets ({listed}); compare "
                "like with like"
            )
        _refuse_repeated_seeds(env, method, group)
        curves = [run.curves() for run in group]
        steps = curves[0][0]
        for run, (s, _) in zip(group, curves, strict=True):
            if not np.array_equal(s, steps):
                raise RunError(
                    f"{method} on {env}: {run.path} was evaluated at other steps than "
                    f"{group[0].path}; runs of one method must share --steps and --eval-every"
                )
        returns = np.concatenate([r for _, r in curves])
        results.append(MethodCurves(env, method, group[0].config["algo"], steps, returns, group))
    for env in {r.env for r in results}:
        _refuse_other_budgets_or_grids(env, [r for r in results if r.env == env])
    return results


def _refuse_other_budgets_or_grids(env: str, methods: list[MethodCurves]) -> None:
    """RunError unless the methods on ``env`` share a budget and evaluation steps: final return
    (the last ten evaluations), the area and steps to the baseline's return depend on both."""
    budgets = {m.method: m.budget for m in methods}
    if len(set(budgets.values())) > 1:
        listed = ", ".join(f"{m}: {b:,}" for m, b in budgets.items())
        raise RunError(
            f"runs on {env} have different step budgets ({listed}); compare like with like"
        )
    grids = {m.method: m.runs[0].config["eval_every"] for m in methods}
    if any(not np.array_equal(m.steps, methods[0].steps) for m in methods):
        listed = ", ".join(f"{m}: every {every:,}" for m, every in grids.items())
        raise RunError(
            f"runs on {env} were evaluated at different steps ({listed}); their final returns, "
            "areas and steps to the baseline are not comparable: rerun with one --eval-every"
        )


def _refuse_repeated_seeds(env: str, method: str, group: list[Run]) -> None:
    """RunError if a seed of one (task, method) comes from two runs: the same settings and seed
    are one sample, and pooled twice they would narrow every interval."""
    first: dict[int, Run] = {}
    for run in group:
        for seed in sorted(run.evaluations["seed"].unique()):
            if seed in first:
                raise RunError(
                    f"{method} on {env}: seed {seed} is in both {first[seed].path} and "
                    f"{run.path}, with the same settings; report on one of them"
                )
            first[seed] = run


def _baseline(
    results: list[MethodCurves], method: MethodCurves, name: str | None
) -> MethodCurves | None:
    """The named method (a label, or an algorithm), or else the dense algorithm of ``method``'s
    family (td3, sac); of an algorithm run with several settings, the runs of ``method``'s."""
    env = method.env
    candidates = [r for r in results if r.env == env]
    algo = family_of(method.algo) if name is None else name
    named = [r for r in candidates if r.method == name] or [r for r in candidates if r.algo == algo]
    if not named and name is not None:
        methods = ", ".join(r.method for r in candidates)
        raise RunError(f"baseline {name!r} has no runs on {env}; methods there: {methods}")
    if len(named) < 2:
        return named[0] if named else None
    # runs of several settings: the one run as this method was (--overlap against --overlap)
    theirs = [method_settings(r.runs[0].config) for r in named]
    mine = method_settings(method.runs[0].config)
    varying = differing(theirs)
    same = [r for r, own in zip(named, theirs, strict=True) if _agree(own, mine, varying)]
    if len(same) != 1:
        names = "; ".join(r.method for r in named)
        raise RunError(
            f"{method.method} on {env} could be compared with any of {names}; name its "
            "baseline with --baseline, as one of these labels"
        )
    return same[0]


def _agree(settings: dict, other: dict, keys: list[str]) -> bool:
    return all(settings.get(k) == other.get(k) for k in keys)


def summary_table(results: list[MethodCurves], baseline: str | None = None) -> pd.DataFrame:
    """One row per task and method with the paper's metrics and robust aggregates."""
    rows = []
    for r in results:
        finals = r.finals
        low, high = stratified_bootstrap_ci([finals])
        lca = np.array([learning_curve_area(curve) for curve in r.returns])
        row = {
            "env": r.env,
            "method": r.method,
            "seeds": len(finals),
            "steps": r.budget,
            "final_mean": finals.mean(),
            "final_std": finals.std(),
            "final_iqm": iqm(finals),
            "iqm_ci_low": low,
            "iqm_ci_high": high,
            "lca_mean": lca.mean(),
            "lca_std": lca.std(),
            "params_ratio": r.ratio("params", "total", "dense_total"),
            # over the whole run, so pruning's dense phase and RigL's dense gradients count
            "run_flops_ratio": r.ratio("flops", "run_total", "dense_run_total"),
            "baseline": None,
            "steps_to_baseline": None,
            "baseline_steps": None,
            "step_saving_pct": None,
        }
        base = _baseline(results, r, baseline)
        if base is not None:
            threshold = base.finals.mean()
            reached = steps_to_threshold(r.steps, r.returns.mean(axis=0), threshold)
            own = steps_to_threshold(base.steps, base.returns.mean(axis=0), threshold)
            row.update(baseline=base.method, steps_to_baseline=reached, baseline_steps=own)
            if reached is not None and own:
                row["step_saving_pct"] = 100 * (1 - reached / own)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as the paper prints it."""
    lines = [
        "| task | method | seeds | steps | final return (mean ± std) | IQM [95% CI] | LCA | "
        "baseline | steps to its final return | saving | params | FLOPs (run) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table.itertuples():
        # a column holding no value for some rows holds NaN there, not None
        baseline = row.baseline if isinstance(row.baseline, str) else None
        reached = "–" if baseline is None else _shown(row.steps_to_baseline, "{:,.0f}", "never")
        lines.append(
            f"| {row.env} | {row.method} | {row.seeds} | {row.steps:,} "
            f"| {row.final_mean:.0f} ± {row.final_std:.0f} "
            f"| {row.final_iqm:.0f} [{row.iqm_ci_low:.0f}, {row.iqm_ci_high:.0f}] "
            f"| {row.lca_mean:.3g} ± {row.lca_std:.2g} | {baseline or '–'} | {reached} "
            f"| {_shown(row.step_saving_pct, '{:.0f}%')} "
            f"| {_shown(row.params_ratio, '{:.2f}x')} | {_shown(row.run_flops_ratio, '{:.2f}x')} |"
        )
    return "\n".join(lines)


def _shown(value, form: str, missing: str = "–") -> str:
    """``value`` in ``form``, or ``missing`` where it is None or NaN."""
    return missing if value is None or pd.isna(value) else form.format(value)


def plot_curves(results: list[MethodCurves], env: str, path: Path) -> None:
    """Mean evaluation return with a band of ± one std over seeds, one line per method."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in (r for r in results if r.env == env):
        mean, std = r.returns.mean(axis=0), r.returns.std(axis=0)
        ax.plot(r.steps, mean, label=f"{r.method} ({len(r.returns)} seeds)")
        ax.fill_between(r.steps, mean - std, mean + std, alpha=0.2)
    ax.set(title=env, xlabel="environment steps", ylabel="evaluation return")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def sparse_methods(results: list[MethodCurves], env: str) -> list[MethodCurves]:
    """The methods on ``env`` whose logged layers were ever sparse: a dense member of a mixed
    population logs its layers at density 1."""
    return [
        r
        for r in results
        if r.env == env
        and r.runs[0].metrics is not None
        and (r.runs[0].metrics.filter(regex="^density/") < 1).any(axis=None)
    ]


def plot_topology(results: list[MethodCurves], env: str, path: Path) -> bool:
    """Per-layer density and connections changed over time for the sparse methods (of each
    method's first run: a run's total of connections changed grows with its agents)."""
    sparse = sparse_methods(results, env)
    if not sparse:
        return False
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    layer_style: dict[str, str] = {}
    for index, r in enumerate(sparse):
        color = f"C{index % 10}"  # one colour per method, one line style per layer
        metrics = r.runs[0].metrics
        for column in (c for c in metrics.columns if c.startswith("density/")):
            style = layer_style.setdefault(column[8:], styles[len(layer_style) % len(styles)])
            axes[0].plot(metrics["step"], metrics[column], color=color, linestyle=style)
        if "connections_changed" in metrics:  # mixed populations of earlier versions: none
            axes[1].plot(
                metrics["step"], metrics["connections_changed"], color=color, label=r.method
            )
    for layer, style in layer_style.items():
        axes[0].plot([], [], color="gray", linestyle=style, label=layer)
    axes[0].set(title=f"{env}: density per layer", xlabel="environment steps", ylabel="density")
    axes[1].set(title="connections changed per log interval", xlabel="environment steps")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def plot_dormant(results: list[MethodCurves], env: str, path: Path) -> bool:
    """Share of τ-dormant hidden units over time, actor and critics side by side: one colour
    per method (mean over its seeds), one line style per hidden layer."""
    logged = [
        r
        for r in results
        if r.env == env
        and all(run.metrics is not None for run in r.runs)
        and any(c.startswith("dormant/") for c in r.runs[0].metrics.columns)
    ]
    if not logged:
        return False
    fig = Figure(figsize=(11, 4.5 + 0.25 * len(logged)))
    axes = dict(zip(("actor", "critic"), fig.subplots(1, 2), strict=True))
    styles = ["-", "--", ":", "-."]
    layers: set[int] = set()
    for index, r in enumerate(logged):
        color = f"C{index % 10}"
        # each run's rows are means over its agents: weighted by them, a mean over all seeds
        tables = [run.metrics.filter(regex=r"^(step|dormant/.*)$") for run in r.runs]
        metrics = _agent_mean(tables, [agents(run) for run in r.runs])
        for column in (c for c in metrics.columns if c.startswith("dormant/")):
            net, layer = column.removeprefix("dormant/").split("_h")
            layers.add(int(layer))
            style = styles[(int(layer) - 1) % len(styles)]
            axes[net].plot(metrics.index, metrics[column], color=color, linestyle=style)
        axes["actor"].plot([], [], color=color, label=r.method)
    for layer in sorted(layers):
        style = styles[(layer - 1) % len(styles)]
        axes["critic"].plot([], [], color="gray", linestyle=style, label=f"hidden layer {layer}")
    for net, ax in axes.items():
        ax.set(title=f"{env}: dormant units, {net}", xlabel="environment steps", ylabel="share")
        ax.grid(alpha=0.3)
    axes["critic"].legend(fontsize=7)
    fig.legend(*axes["actor"].get_legend_handles_labels(), loc="lower center", fontsize=7)
    fig.tight_layout(rect=(0, 0.06 * len(logged), 1, 1))
    fig.savefig(path, dpi=120)
    return True


def _agent_mean(tables: list[pd.DataFrame], weights: list[int]) -> pd.DataFrame:
    """Per step, the mean of the tables' columns weighted by ``weights`` (where present)."""
    weighted = [t.set_index("step").mul(w) for t, w in zip(tables, weights, strict=True)]
    present = [t.set_index("step").notna().mul(w) for t, w in zip(tables, weights, strict=True)]
    total = pd.concat(weighted).groupby("step").sum(min_count=1)
    return total / pd.concat(present).groupby("step").sum().replace(0, np.nan)


def _left_out(run: Run) -> str:
    if not run.diverged:
        return ""
    every = "every agent " if run.all_diverged else ""
    return f"; left out, {every}diverged: seed(s) {', '.join(map(str, run.diverged))}"


def write_report(
    paths: list[Path | str] | Path | str, out: Path | str, baseline: str | None = None
) -> pd.DataFrame:
    """Find the runs under ``paths`` (one path, or several) and write report.md, report.csv and
    figures into ``out``."""
    paths = [paths] if isinstance(paths, Path | str) else paths
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a directory: choose another --out for the report")
    runs = [run for path in find_runs([Path(p) for p in paths]) for run in load_runs(path)]
    results = collect(runs)
    table = summary_table(results, baseline)
    try:  # the tables replaced whole, or not at all
        out.mkdir(parents=True, exist_ok=True)
        if (out / "report.md").exists():  # an earlier report's figures, of tasks perhaps not here
            for figure in FIGURES:
                for path in out.glob(f"{figure}_*.png"):
                    path.unlink()
        write_atomic(out / "report.csv", table.to_csv(index=False))
        sections = ["# dstrl report", "", markdown(table), ""]
        for env in sorted({r.env for r in results}):
            slug = env.replace("/", "_")
            plot_curves(results, env, out / f"curves_{slug}.png")
            sections.append(f"![{env} learning curves](curves_{slug}.png)")
            if plot_topology(results, env, out / f"topology_{slug}.png"):
                sections.append(f"![{env} topology](topology_{slug}.png)")
            if plot_dormant(results, env, out / f"dormant_{slug}.png"):
                sections.append(f"![{env} dormant units](dormant_{slug}.png)")
        sections += ["", "Runs:", *(f"- `{r.path}` ({r.method}){_left_out(r)}" for r in runs)]
        write_atomic(out / "report.md", "\n".join(sections) + "\n")
    except OSError as error:  # a figure: a full disk, no permission
        raise RunError(f"cannot write the report into {out}: {describe(error)}") from error
    return table
