"""Find and read run directories written by ``dstrl train``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from dstrl.config import flat_settings, unread_settings
from dstrl.rundir import training_now

T = TypeVar("T")

# Configuration fields that never make two runs different methods.
NOT_A_METHOD = {
    "seed",
    "seeds",
    "out",
    "resume",
    "auto_resume",
    "device",
    "threads",
    "progress",
    "tensorboard",
    "checkpoint_every",
    "log_every",
    "vector_env",
    "env_workers",
    "sparse_kernels",  # the same arithmetic, computed another way
    "cuda_graph",
    "dormant_threshold",
    "eval_every",  # when it is measured: runs on other grids are refused, not other methods
    "eval_episodes",
}

# The counts of summary.json that the report divides by their dense counts.
SUMMARY_COUNTS = [
    ("params", "total"),
    ("params", "dense_total"),
    ("flops", "run_total"),
    ("flops", "dense_run_total"),
]


class RunError(ValueError):
    """A set of runs cannot be analysed as asked; the message says why."""


@dataclass
class Run:
    """One finished run directory."""

    path: Path
    config: dict
    summary: dict
    evaluations: pd.DataFrame  # step, member, seed, return, method
    metrics: pd.DataFrame | None = None  # train_metrics.csv, if present (and of this method)
    method: str = field(default="")
    diverged: list[int] = field(default_factory=list)  # seeds left out: they diverged

    @property
    def all_diverged(self) -> bool:
        """Whether every agent diverged (a method of a mixed population, which went on): the
        report leaves the run out and names it."""
        return self.evaluations.empty

    @property
    def env(self) -> str:
        return self.config["env"]

    def curves(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, returns[seeds, evaluations]) of this run's members."""
        table = self.evaluations.pivot_table(index="seed", columns="step", values="return")
        return table.columns.to_numpy(), table.to_numpy()


def find_runs(paths: list[Path]) -> list[Path]:
    """Every directory at or below ``paths`` that holds a config.json written by dstrl train."""
    found = []
    for path in paths:
        if not path.exists():
            raise RunError(f"{path} does not exist")
        candidates = [path] if (path / "config.json").exists() else []
        candidates += [p.parent for p in sorted(path.rglob("config.json")) if p.parent != path]
        found += [
            c
            for c in candidates
            if (c / "evaluations.csv").exists() or (c / "checkpoint.pt").exists()
        ]
    by_place = {c.resolve(): c for c in reversed(found)}  # one run however it is spelled
    unique = sorted(by_place.values())
    if not unique:
        raise RunError(f"no dstrl runs found under {', '.join(map(str, paths))}")
    return unique


def load_runs(path: Path) -> list[Run]:
    """Read one run directory: one run, or one per algorithm of a mixed population. An
    unfinished or damaged run is an error that names the missing file."""
    summary_path = path / "summary.json"
    if not summary_path.exists():
        pid = training_now(path)
        if pid is not None:
            raise RunError(
                f"{path} is training (pid {pid}); report on it when it has finished, or leave "
                "it out"
            )
        raise RunError(f"{path} is not finished (no summary.json); resume it or leave it out")
    rewrite = f"; write it again with dstrl train --out {path} --resume, or leave the run out"
    config = _read(path / "config.json", lambda f: json.loads(f.read_text()), "; leave the run out")
    summary = _read(summary_path, lambda f: json.loads(f.read_text()), rewrite)
    evaluations = _read(path / "evaluations.csv", pd.read_csv, "; leave the run out")
    metrics_path = path / "train_metrics.csv"
    metrics = None
    if metrics_path.exists():
        advice = "; it only draws the figures: delete it to report without them"
        metrics = _read(metrics_path, pd.read_csv, advice)
    _check_config(config, path)
    _check_summary(summary, path, config["algo"])
    if summary.get("steps") != config["steps"]:  # extended by a dstrl that kept the summary
        raise RunError(
            f"{path} is not finished: it was extended to {config['steps']:,} steps, and its "
            f"summary.json is of {summary.get('steps')} steps; resume it (dstrl train --out "
            f"{path} --resume) or leave it out"
        )
    config = _complete(config)
    evaluations = _numeric(evaluations, path / "evaluations.csv")
    if not isinstance(config["algo"], list):
        return [_run(path, config, summary, evaluations, metrics)]
    # a mixed population: each method's training metrics are its columns "<name>@<algo>"
    if "method" not in evaluations or "methods" not in summary:
        raise RunError(f"{path} holds several algorithms but no per-algorithm results")
    runs, seeds = [], config["seeds"]
    for i, algo in enumerate(config["algo"]):  # members in blocks of --seeds, in this order
        block = range(i * seeds, (i + 1) * seeds)
        diverged = [e for e in summary.get("diverged", []) if e["member"] in block]
        own_evaluations = evaluations[evaluations["method"] == algo]
        own_metrics = _method_metrics(metrics, algo)
        config_of_algo, summary_of_algo = dict(config, algo=algo), summary["methods"][algo]
        runs.append(
            _run(path, config_of_algo, summary_of_algo, own_evaluations, own_metrics, diverged)
        )
    return runs


def _read(file: Path, read: Callable[[Path], T], advice: str = "") -> T:
    """``read(file)``, or a RunError that names the file and why it cannot be read."""
    try:
        return read(file)
    except (OSError, ValueError) as error:  # pandas' ParserError is a ValueError
        raise RunError(f"{file} cannot be read ({error}){advice}") from error


def _method_metrics(metrics: pd.DataFrame | None, algo: str) -> pd.DataFrame | None:
    """One method's columns of a mixed population's training metrics, under their plain names
    (None where the run wrote none)."""
    if metrics is None:
        return None
    suffix = f"@{algo}"
    columns = [c for c in metrics.columns if c.endswith(suffix)]
    if not columns:
        return None
    own = metrics[["step", *columns]]
    return own.rename(columns={c: c.removesuffix(suffix) for c in columns})


def _run(path, config, summary, evaluations, metrics, diverged=None) -> Run:
    # agents halted by divergence have a cut curve: they are left out, and the report says so
    events = summary.get("diverged", []) if diverged is None else diverged
    members = set(evaluations["member"])
    evaluations = evaluations[~evaluations["member"].isin([e["member"] for e in events])]
    if evaluations.empty and not (members and members <= {e["member"] for e in events}):
        raise RunError(f"{path}/evaluations.csv has no evaluations of an agent that finished")
    seeds = sorted(event["seed"] for event in events)
    return Run(path, config, summary, evaluations, metrics, diverged=seeds)


def _check_config(config, path: Path) -> None:
    """The fields of config.json that the report reads, as ``dstrl train`` writes them; a
    RunError naming those that are not (an edit), which would fail deep in the report."""

    def damaged(what: str) -> RunError:
        return RunError(
            f"{path}/config.json is damaged ({what}); put back the file dstrl train wrote, or "
            "leave the run out"
        )

    if not isinstance(config, dict):
        raise damaged("not a JSON object")
    algos = config.get("algo")
    algos = algos if isinstance(algos, list) else [algos]
    fields = {
        "env": isinstance(config.get("env"), str),
        "algo": bool(algos) and all(isinstance(a, str) for a in algos),
        "steps": isinstance(config.get("steps"), int) and _count(config["steps"], 1),
        "seeds": isinstance(config.get("seeds"), int) and _count(config["seeds"], 1),
    }
    wrong = [name for name, good in fields.items() if not good]
    if wrong:
        raise damaged(f"its {', '.join(wrong)}")


def _check_summary(summary, path: Path, algo: str | list[str]) -> None:
    """The fields of summary.json that the report reads: which agents diverged, and each
    algorithm's parameter and FLOP counts; a RunError naming the first that is damaged."""

    def damaged(what: str) -> RunError:
        return RunError(
            f"{path}/summary.json is damaged ({what}); write it again with dstrl train --out "
            f"{path} --resume, or leave the run out"
        )

    if not isinstance(summary, dict):
        raise damaged("not a JSON object")
    events = summary.get("diverged", [])
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and all(_count(e.get(k), 0) for k in ("member", "seed")) for e in events
    ):
        raise damaged("its diverged list")
    parts = {None: summary}
    if isinstance(algo, list):
        methods = summary.get("methods")
        if not isinstance(methods, dict):
            raise damaged("its methods")
        parts = {a: methods.get(a) for a in algo}
    for name, part in parts.items():
        for section, key in SUMMARY_COUNTS:
            counts = part.get(section) if isinstance(part, dict) else None
            counts = counts if isinstance(counts, dict) else {}
            # a divisor, but for the FLOPs of a run that never left its random warm-up
            least = 1 if key.startswith("dense_") and counts.get("run_total") != 0 else 0
            if not _count(counts.get(key), least):
                where = f"methods.{name}." if name else ""
                raise damaged(f"its {where}{section}.{key}")


def _count(value, least: int) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= least


def _numeric(evaluations: pd.DataFrame, csv: Path) -> pd.DataFrame:
    """The evaluations, their step, member, seed and return as numbers; a RunError naming the
    first row that is not (cut short, or edited), which would otherwise fail deep in the report
    or make its numbers NaN."""
    columns = ["step", "member", "seed", "return"]
    missing = [c for c in columns if c not in evaluations]
    if missing:
        raise RunError(f"{csv} has no {', '.join(missing)} column; it is not dstrl's")
    numbers = evaluations[columns].apply(pd.to_numeric, errors="coerce")
    whole = (numbers[columns[:3]].fillna(0) % 1 == 0).all(axis=1)  # step, member, seed
    finite = np.isfinite(numbers.fillna(0).to_numpy()).all(axis=1)
    bad = numbers.isna().any(axis=1) | ~whole | ~finite
    repeated = numbers.duplicated(["member", "step"]) & ~bad  # an edit; it would be averaged in
    if (bad | repeated).any():
        row = int((bad | repeated).to_numpy().nonzero()[0][0])
        line = csv.read_text().splitlines()[row + 1]  # as written, after the header
        what = "repeats an evaluation of an earlier line" if repeated.iloc[row] else "is damaged"
        raise RunError(
            f"{csv} line {row + 2} {what} ({line!r}); delete that line, or the run, and "
            "report again"
        )
    return evaluations.assign(**{c: numbers[c] for c in columns}).astype(
        {c: int for c in columns[:3]}
    )


def label_methods(runs: list[Run]) -> None:
    """Name each run's method: its algo, plus any setting in which runs of that algo differ."""
    by_algo: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        by_algo.setdefault((run.env, run.config["algo"]), []).append(run)
    for (_, algo), group in by_algo.items():
        settings = [method_settings(r.config) for r in group]
        varying = differing(settings)
        for run, own in zip(group, settings, strict=True):
            extra = ", ".join(f"{k}={_short(own[k])}" for k in varying if k in own)
            run.method = f"{algo} ({extra})" if extra else algo


def method_settings(config: dict) -> dict:
    """The settings of a run (flattened, as ``td3.batch_size``) that can make its method differ
    from another run's: not the budget, bookkeeping or devices, and not what it never reads."""
    flat = flat_settings(config)
    return {
        k: v for k, v in flat.items() if k not in NOT_A_METHOD | {"steps"} | unread_settings(flat)
    }


def differing(settings: list[dict]) -> list[str]:
    """The settings whose values differ between the runs of ``settings`` that read them."""
    keys = sorted({k for own in settings for k in own})
    return [k for k in keys if len({json.dumps(own[k]) for own in settings if k in own}) > 1]


def _complete(config: dict) -> dict:
    """A saved configuration with the options added since it was written, at the values the
    run used (their defaults), so that runs of older versions compare by what they did."""
    from dstrl.config import ConfigError, TrainConfig  # the configuration only, no training

    try:
        complete = TrainConfig.from_json(dict(config, out=config.get("out", ".")))
    except (ConfigError, TypeError, ValueError, KeyError):
        return config  # not a configuration this version knows: compared as written
    return {**json.loads(json.dumps(complete.to_json())), **config}


def _short(value) -> str:
    if isinstance(value, list):
        return "x".join(map(str, value))
    return str(value)
