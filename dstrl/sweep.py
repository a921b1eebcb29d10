"""`dstrl sweep`: a grid of independent `dstrl train` runs, resumable, on this machine or on Ray.

Each cell (env, algo, seed) is one run directory ``OUT/<env>/<algo>/seed<seed>``; packed (the
default on a GPU), each (env, family) is one population ``OUT/<env>/packed/<family>`` that trains
all its algorithms' seeds in one process (``prune-`` and ``rlx2-`` algorithms, which need
schedules of their own, one population each, ``OUT/<env>/packed/<algo>``). The two layouts never
share a grid directory: a packed grid and an unpacked one of the same runs would hold every seed
twice. A finished run (summary.json) is skipped, once its saved options are checked against the
grid's as a resume checks them; any other is run with ``dstrl train --auto-resume``, which
continues a stopped one from its checkpoint and starts anything else afresh; every run uses one
torch thread. Ray is optional: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from dstrl.config import (
    DEFAULT_IN_DOCSTRING,
    Algo,
    ConfigError,
    TrainConfig,
    check_seeds,
    runs_apart,
)
from dstrl.resume import resume_config
from dstrl.signals import handling

# Options that the sweep sets itself for every run.
RESERVED = {
    "--algo",
    "--env",
    "--seed",
    "--seeds",
    "--steps",
    "--out",
    "--resume",
    "--auto-resume",
    "--threads",
    "--device",
}
PACKED = "packed"  # OUT/<env>/packed/<family>: a packed grid's populations (no algorithm's name)


@dataclass
class SweepArgs:
    """Run envs x algos x seeds as independent training runs, then write a report."""

    envs: tuple[str, ...] = ("HalfCheetah-v5",)
    """Gymnasium environment ids."""
    algos: tuple[Algo, ...] = ("td3", "static-td3", "ds-td3")
    """Algorithms to compare."""
    seeds: int = 3
    """Seeds per (env, algo): --seed, --seed + 1, ..."""
    seed: int = 0
    """First seed."""
    steps: int = 1_000_000
    """Environment steps per run."""
    out: Path = Path("runs/sweep")
    """Directory of the grid; run directories go below it, the report into OUT/report."""
    workers: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Runs at a time (default: this machine's CPU cores)."""
    backend: Literal["local", "ray"] = "local"
    """local: processes on this machine; ray: tasks on a Ray cluster."""
    address: Annotated[str | None, DEFAULT_IN_DOCSTRING] = None
    """Ray cluster address (default: start a local Ray runtime)."""
    train_args: str = ""
    """More `dstrl train` options for every run, given with "=": --train-args="--density 0.1"."""
    device: str = "cpu"
    """Torch device of every run (cpu, cuda, ...)."""
    pack: Literal["auto", "on", "off"] = "auto"
    """Train each (env, family) as one population process instead of one process per (env,
    algo, seed); auto: packed when --device is not the CPU, where one batched update of many
    agents costs about what one agent's does."""
    report: bool = True
    """Write OUT/report when every run has finished."""


@dataclass(frozen=True)
class Cell:
    """One training process: some algorithms' agents of one env, seeds seed..seed+seeds-1."""

    env: str
    algos: tuple[str, ...]
    seed: int
    path: Path
    seeds: int = 1

    @property
    def name(self) -> str:
        if self.seeds == 1:
            return f"{self.env} {' '.join(self.algos)} seed {self.seed}"
        last = self.seed + self.seeds - 1
        return f"{self.env} {' '.join(self.algos)} seeds {self.seed}-{last}"


def plan(args: SweepArgs) -> list[Cell]:
    """The grid's runs, after checking what can be checked before anything starts."""
    if args.seeds < 1 or args.steps < 1:
        raise ConfigError("--seeds and --steps must be positive")
    check_seeds(args.seed, args.seeds)
    from dstrl.train import check_device  # training's imports, only when a sweep is planned

    check_device(args.device)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be positive, got {args.workers}")
    if not args.envs or not args.algos:
        raise ConfigError("give at least one --envs and one --algos")
    extra = shlex.split(args.train_args)
    clash = sorted({a.split("=")[0] for a in extra} & RESERVED)
    if clash:
        raise ConfigError(f"--train-args cannot set {', '.join(clash)}: the sweep sets them")
    try:  # the same parser as dstrl train, so a typo fails now and not in every run
        tyro.cli(TrainConfig, args=extra, console_outputs=False)
    except SystemExit as error:
        raise ConfigError(
            f"--train-args {args.train_args!r} is not valid for dstrl train"
        ) from error
    from dstrl.data.envs import EnvError, check_env

    for env in args.envs:
        try:
            check_env(env)
        except EnvError as error:
            raise ConfigError(str(error)) from error
    packed = args.pack == "on" or (args.pack == "auto" and args.device != "cpu")
    for env in args.envs:
        _refuse_other_layout(args.out / env, args.algos, packed)
    if packed:
        return [cell for env in args.envs for cell in _populations(env, args)]
    return [
        Cell(env, (algo,), seed, args.out / env / algo / f"seed{seed}")
        for env in args.envs
        for algo in args.algos
        for seed in range(args.seed, args.seed + args.seeds)
    ]


def _refuse_other_layout(grid: Path, algos: tuple[str, ...], packed: bool) -> None:
    """ConfigError if ``grid`` (one env's directory) holds runs of the other layout."""
    other = [grid / algo for algo in algos] if packed else [grid / PACKED]
    found = [path for path in other if path.is_dir() and any(path.iterdir())]
    if found:
        kind, flag = ("an unpacked", "off") if packed else ("a packed", "on")
        raise ConfigError(
            f"{found[0]} holds runs of {kind} sweep; rerun with --pack {flag}, or give "
            "another --out"
        )


def _populations(env: str, args: SweepArgs) -> list[Cell]:
    """One env's grid as populations: per family the algorithms that can share one, and every
    other algorithm on its own, each with all the seeds."""
    shared: dict[str, list[str]] = {}
    cells = []
    for algo in args.algos:
        family = algo.rsplit("-", 1)[-1]
        if runs_apart(algo):
            cells.append(Cell(env, (algo,), args.seed, args.out / env / PACKED / algo, args.seeds))
        else:
            shared.setdefault(family, []).append(algo)
    for family, algos in shared.items():
        path = args.out / env / PACKED / family
        cells.append(Cell(env, tuple(algos), args.seed, path, args.seeds))
    return cells


def command(cell: Cell, args: SweepArgs) -> list[str] | None:
    """The `dstrl train` command that finishes ``cell``; None if it is already finished.

    It is the same command whatever state the cell is in: ``--auto-resume`` starts the run, or
    continues it from its checkpoint (extending it to a larger ``--steps``).
    """
    options = _train_options(cell, args)
    if _finished(cell, args, options):
        return None
    return [sys.executable, "-m", "dstrl", "train", "--steps", str(args.steps), *options]


def _train_options(cell: Cell, args: SweepArgs) -> list[str]:
    """``cell``'s options of `dstrl train`, but for --steps."""
    return [
        "--out",
        str(cell.path),
        "--threads",
        "1",
        "--no-progress",
        "--auto-resume",
        "--algo",
        *cell.algos,
        "--env",
        cell.env,
        "--seed",
        str(cell.seed),
        "--seeds",
        str(cell.seeds),
        "--device",
        args.device,
        *shlex.split(args.train_args),
    ]


def _finished(cell: Cell, args: SweepArgs, options: list[str]) -> bool:
    """Whether ``cell``'s run has trained --steps; a ConfigError if its summary cannot be read,
    or if it ran with options other than the sweep gives (named, as a resume names them)."""
    summary = cell.path / "summary.json"
    if not summary.exists():
        return False
    try:
        steps = json.loads(summary.read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{summary} cannot be read ({error}); delete it, and the sweep finishes that run "
            "from its checkpoint"
        ) from error
    if steps < args.steps:
        return False
    resume_config(tyro.cli(TrainConfig, args=options, console_outputs=False), options)
    return True


STOPPED = (130, -signal.SIGTERM, -signal.SIGINT)  # a run stopped by a signal (before it began)


def execute(
    cmd: list[str], started: Callable[[subprocess.Popen], None] | None = None
) -> tuple[int, str, float]:
    """Run one training process; (exit code, the last lines it wrote to stderr, seconds).
    ``started`` is given the process once it runs."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    began = time.monotonic()
    with subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        if started is not None:
            started(process)
        _, stderr = process.communicate()
    tail = [line for line in stderr.splitlines() if line.strip()][-3:]
    return process.returncode, " | ".join(tail), time.monotonic() - began


class _Running:
    """A local sweep's training processes. Once the sweep is stopped (Ctrl-C, SIGTERM), each is
    sent SIGTERM, so it stops at a checkpoint, and no more start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processes: list[subprocess.Popen] = []
        self.stopping = False

    def execute(self, cmd: list[str]) -> tuple[int, str, float] | None:
        """``execute``, or None if the sweep was stopped first."""
        with self.lock:
            if self.stopping:
                return None
        return execute(cmd, self._started)

    def _started(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.processes.append(process)
            if self.stopping:  # stopped while it was being started
                process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for process in self.processes:
                process.send_signal(signal.SIGTERM)  # nothing for one that has ended


def _outcome(cell: Cell, code: int, error: str, seconds: float) -> str:
    if code in STOPPED:
        return f"stopped {cell.name} by a signal ({seconds:.0f} s)"
    if code != 0:
        return f"FAILED {cell.name} (exit {code}): {error or 'no message'}"
    summary = json.loads((cell.path / "summary.json").read_text())
    finals = ", ".join(
        f"{name} {method['final_return']['mean']:.1f}"
        for name, method in summary.get("methods", {cell.algos[0]: summary}).items()
    )
    return f"done {cell.name}: final return {finals} ({seconds:.0f} s)"


def run_sweep(args: SweepArgs) -> int:
    """Run the grid; prints a line per run as it finishes. Exit code 0 when all succeeded."""
    cells = plan(args)
    todo = []
    for cell in cells:
        cmd = command(cell, args)
        if cmd is None:
            print(f"skip {cell.name}: already finished", flush=True)
        else:
            todo.append((cell, cmd))
    workers = args.workers or os.cpu_count() or 1
    print(
        f"{len(todo)} of {len(cells)} runs to do, {workers} at a time ({args.backend})", flush=True
    )
    runner = _run_ray if args.backend == "ray" else _run_local
    # while runs go on, SIGTERM to the sweep alone (kill) stops them as Ctrl-C to its whole
    # process group does, instead of leaving them to train on with nobody to wait for them
    with handling([signal.SIGTERM], signal.default_int_handler):
        codes = runner(todo, workers, args.address)
    if codes["failed"] or codes["stopped"]:
        said = [f"{codes['failed']} run(s) failed"] if codes["failed"] else []
        said += [f"{codes['stopped']} stopped by a signal"] if codes["stopped"] else []
        fix = "fix the cause and rerun" if codes["failed"] else "rerun"
        print(f"{' and '.join(said)}; {fix} the same command to continue")
        return 1
    if args.report:
        from dstrl.analysis.report import write_report

        write_report([args.out], args.out / "report")
        print(f"report: {args.out / 'report' / 'report.md'}")
    return 0


def _run_local(todo: list[tuple[Cell, list[str]]], workers: int, address: str | None) -> Counter:
    running = _Running()
    codes: Counter = Counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(running.execute, cmd): cell for cell, cmd in todo}
        reported = 0

        def report(future: Future) -> None:
            nonlocal reported
            result = None if future.cancelled() else future.result()
            if result is None:
                return  # never started
            codes[_kind(result[0])] += 1
            reported += 1
            print(f"[{reported}/{len(todo)}] {_outcome(futures[future], *result)}", flush=True)

        pending = set(futures)
        try:
            for future in as_completed(futures):
                pending.discard(future)
                report(future)
        except KeyboardInterrupt:  # stop the runs at their checkpoints, then say so
            running.stop()
            for future in pending:
                future.cancel()
            for future in as_completed(pending):
                report(future)
            raise
    return codes


def _kind(code: int) -> str:
    return "done" if code == 0 else "stopped" if code in STOPPED else "failed"


def _run_ray(todo: list[tuple[Cell, list[str]]], workers: int, address: str | None) -> Counter:
    try:
        import ray
    except ImportError as error:
        raise ConfigError("--backend ray needs Ray: pip install -e '.[ray]'") from error
    if address is None:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(execute)
        futures = {remote.remote(cmd): cell for cell, cmd in todo}
        codes: Counter = Counter()
        while futures:
            ready, _ = ray.wait(list(futures), num_returns=1)
            cell = futures.pop(ready[0])
            code, error, seconds = ray.get(ready[0])
            codes[_kind(code)] += 1
            outcome = _outcome(cell, code, error, seconds)
            print(f"[{sum(codes.values())}/{len(todo)}] {outcome}", flush=True)
        return codes
    finally:
        ray.shutdown()
