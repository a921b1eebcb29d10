"""Resuming a run: its saved configuration against the command that continues it.

A resume trains on with the configuration saved in the run directory. The command may repeat
any option at its saved value (a job scheduler reruns the command that started the run); only
the options in ``RESUME_OVERRIDES``, which change how a run computes and not what, may differ.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import replace

from dstrl.config import ConfigError, TrainConfig, unread_settings
from dstrl.rundir import CHECKPOINT, clear_unfinished_run, exclusive, holds_run_files

# Options a resume may change; any other option given with it must equal its saved value.
RESUME_OVERRIDES = {
    "steps",
    "device",
    "threads",
    "vector_env",
    "env_workers",
    "sparse_kernels",  # how, not what: the numbers agree up to float32 rounding
    "cuda_graph",
    "tf32",
    "progress",
    "tensorboard",
}
NOT_SAVED = {"resume", "auto_resume", "out"}


def given_options(argv: list[str]) -> set[str]:
    """The configuration fields named on the command line (``td3.learning_rate`` for
    ``--td3.learning-rate``)."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            names.add(name.removeprefix("no_"))
    defaults = TrainConfig()
    return {name for name in names if _has(defaults, name)}


def _has(config: TrainConfig, name: str) -> bool:
    try:
        _value(config, name)
    except AttributeError:
        return False
    return True


def _value(config: TrainConfig, name: str):
    return functools.reduce(getattr, name.split("."), config)


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return " ".join(map(_shown, value))
    if isinstance(value, float):
        return f"{value:g}"
    return "unset" if value is None else str(value)


def resume_config(parsed: TrainConfig, argv: list[str]) -> TrainConfig:
    """The saved configuration of the run directory, with the few options a resume may change.

    Options given again with their saved values are accepted, so that a job scheduler can rerun
    the command that started the run; each one that differs is named with both values.
    """
    run_dir = parsed.run_dir
    saved = TrainConfig.load(run_dir)
    given = given_options(argv) - NOT_SAVED
    # what the run never reads may differ (noted, as a new run notes it): --td3.* for a SAC run
    unread = unread_settings({name: _value(saved, name) for name in _names(saved)})
    differ = [
        name
        for name in sorted(given - RESUME_OVERRIDES - unread)
        if _value(parsed, name) != _value(saved, name)
    ]
    if differ:
        listed = "; ".join(
            f"--{name.replace('_', '-')} is {_shown(_value(saved, name))} in the run, "
            f"{_shown(_value(parsed, name))} here"
            for name in differ
        )
        overrides = ", ".join("--" + n.replace("_", "-") for n in sorted(RESUME_OVERRIDES))
        raise ConfigError(
            f"{run_dir} continues with its saved configuration, and this command differs: "
            f"{listed}. Give the saved values or leave them out (only {overrides} can change)"
        )
    changes = {name: getattr(parsed, name) for name in given & RESUME_OVERRIDES}
    resumed = replace(saved, **changes, out=run_dir, resume=True, auto_resume=False)
    check_resumed(resumed)  # --steps only grows
    return resumed


def finished_without_checkpoint(config: TrainConfig) -> bool:
    """Whether the run ``config`` resumes has finished at its --steps, its checkpoint deleted
    since (to save space): nothing is left to do, and nothing can be."""
    run_dir = config.run_dir
    if (run_dir / CHECKPOINT).exists() or not (run_dir / "summary.json").exists():
        return False
    try:
        return json.loads((run_dir / "summary.json").read_text())["steps"] == config.steps
    except (OSError, ValueError, KeyError, TypeError):
        return False  # loading the checkpoint says what is wrong


def check_resumed(config: TrainConfig) -> None:
    """ConfigError unless ``config`` is its run's saved configuration but for
    ``RESUME_OVERRIDES`` and settings the run never reads: a resume built in Python, not by
    ``resume_config``, trained on with whatever it held, another seed or algorithm included, in
    the same run directory."""
    saved = TrainConfig.load(config.run_dir)
    names = _names(saved)
    unread = unread_settings({name: _value(saved, name) for name in names})
    free = RESUME_OVERRIDES | NOT_SAVED | unread  # a buffer's size that follows --steps, unread
    differ = [
        name for name in names if name not in free and _value(config, name) != _value(saved, name)
    ]
    if differ:
        listed = "; ".join(
            f"{name} is {_value(saved, name)!r} in the run, {_value(config, name)!r} here"
            for name in differ[:5]
        )
        more = f" (and {len(differ) - 5} more)" if len(differ) > 5 else ""
        raise ConfigError(
            f"{config.run_dir} continues with its saved configuration, and this one differs: "
            f"{listed}{more}. Resume with TrainConfig.load({str(config.run_dir)!r}), changing "
            f"only {', '.join(sorted(RESUME_OVERRIDES))}"
        )
    if config.steps < saved.steps:
        raise ConfigError(f"--steps can only grow on resume (the run's is {saved.steps:,})")


def _names(config) -> list[str]:
    """The dotted names of a configuration's fields, those of its agents' settings included."""
    names = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        inner = _names(value) if dataclasses.is_dataclass(value) else [""]
        names += [f"{f.name}.{n}" if n else f.name for n in inner]
    return names


def start_or_resume(parsed: TrainConfig, argv: list[str] | None = None) -> TrainConfig:
    """``--auto-resume``: continue the run in --out if it has a checkpoint or has finished, else
    start it (after clearing what an attempt killed before its first checkpoint left behind).
    From the command line (``argv``) the saved configuration is continued with the options
    given; from Python (no ``argv``) ``parsed`` itself is, checked against it."""
    run_dir = parsed.run_dir
    if (run_dir / CHECKPOINT).exists() or (run_dir / "summary.json").exists():
        if argv is None:
            return replace(parsed, resume=True, auto_resume=False)
        return resume_config(parsed, argv)
    if holds_run_files(run_dir):
        with exclusive(run_dir):  # never while another process trains there
            clear_unfinished_run(run_dir)
    return replace(parsed, auto_resume=False)
