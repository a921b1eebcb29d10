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

import io
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from contextlib import ExitStack, redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import tyro

from dstrl.config import Algo, ConfigError, TrainConfig, check_seeds, family_of, runs_apart
from dstrl.helptext import DEFAULT_IN_DOCSTRING
from dstrl.progress import Progress
from dstrl.resume import resume_config
from dstrl.rundir import CHECKPOINT, exclusive, make_run_dir
from dstrl.signals import STOPS, SWEEP_PID, handling

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
    progress_every: float = 600.0
    """Seconds between progress lines (share of the steps done, and about how long the rest
    will take, at the rate the runs have made so far); 0: none."""


@dataclass(frozen=True)
class Cell:
    """One training process: some algorithms' agents of one env, seeds seed..seed+seeds-1."""

    env: str
    algos: tuple[str, ...]
    seed: int
    path: Path
    seeds: int = 1

    @property
    def log(self) -> Path:
        """Everything the run's processes wrote to stderr, each attempt after its command
        line: beside the run directory, which must hold only the run."""
        return self.path.with_name(self.path.name + ".log")

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

    device = check_device(args.device)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be positive, got {args.workers}")
    if not args.progress_every >= 0:
        raise ConfigError(f"--progress-every must be 0 or more seconds, got {args.progress_every}")
    if not args.envs or not args.algos:
        raise ConfigError("give at least one --envs and one --algos")
    for name, values in (("--envs", args.envs), ("--algos", args.algos)):
        twice = next((v for v in values if values.count(v) > 1), None)
        if twice is not None:
            raise ConfigError(f"{name} gives {twice} twice; give each once")
    if args.address is not None and args.backend != "ray":
        raise ConfigError("--address is a Ray cluster's: give it with --backend ray")
    if args.address is not None:
        _check_reachable(args.address)
    _check_train_args(args)
    from dstrl.data.envs import EnvError, check_env

    for env in args.envs:
        try:
            check_env(env)
        except EnvError as error:
            raise ConfigError(str(error)) from error
    packed = args.pack == "on" or (args.pack == "auto" and device.type != "cpu")
    for env in args.envs:
        _refuse_other_layout(args.out / env, args.algos, packed)
    if packed:
        cells = [_saved_members(cell) for env in args.envs for cell in _populations(env, args)]
        # a new env's population takes the members' order of the grid's populations
        orders = {
            tuple(sorted(c.algos)): c.algos for c in cells if (c.path / "config.json").exists()
        }
        cells = [replace(c, algos=orders.get(tuple(sorted(c.algos)), c.algos)) for c in cells]
    else:
        cells = [
            Cell(env, (algo,), seed, args.out / env / algo / f"seed{seed}")
            for env in args.envs
            for algo in args.algos
            for seed in range(args.seed, args.seed + args.seeds)
        ]
    _check_cells(cells, args)
    _refuse_another_grid(cells, args)
    return cells


def _refuse_another_grid(cells: list[Cell], args: SweepArgs) -> None:
    """ConfigError if a run the sweep would start has other settings than the runs of its
    algorithms already in --out: a rerun without the grid's --train-args trained new seeds with
    dstrl train's defaults, and the report split the grid in two."""
    from dstrl.analysis.runs import method_settings

    def settings(config: TrainConfig) -> dict:
        return method_settings(json.loads(json.dumps(config.to_json())))  # as saved

    kept = {cell.algos: cell for cell in cells if (cell.path / "config.json").exists()}
    for cell in cells:
        other = kept.get(cell.algos)
        if other is None or (cell.path / "config.json").exists():
            continue
        try:
            saved = TrainConfig.load(other.path)
        except ConfigError:
            continue  # that run says what is wrong with it when it runs
        # at the grid run's budget: defaults that follow --steps (RLx2's) are not options
        options = ["--steps", str(saved.steps), *_train_options(cell, args)]
        mine = settings(tyro.cli(TrainConfig, args=options, console_outputs=False))
        theirs = settings(saved)
        differ = [k for k in sorted({*mine, *theirs} - {"env"}) if mine.get(k) != theirs.get(k)]
        if differ:
            shown = "; ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
            raise ConfigError(
                f"{cell.name} would train with other settings than {other.name} in {args.out} "
                f"({shown}): give the grid's --train-args again, or another --out"
            )


def _check_train_args(args: SweepArgs) -> None:
    """ConfigError unless --train-args are options of dstrl train that the sweep leaves to it:
    parsed by the same parser, so that a typo fails now and not in every run."""
    extra = _extra(args)
    if {"-h", "--help"} & set(extra):
        raise ConfigError("--train-args are options for every run: see dstrl train --help")
    given = {a.split("=")[0].replace("--no-", "--", 1) for a in extra if a.startswith("--")}
    clash = sorted(given & RESERVED)
    if clash:
        raise ConfigError(f"--train-args cannot set {', '.join(clash)}: the sweep sets them")
    printed = io.StringIO()  # tyro prints its error in a box: its first paragraph is said here
    try:
        with redirect_stderr(printed), redirect_stdout(printed):
            _, unknown = tyro.cli(TrainConfig, args=extra, return_unknown_args=True)
    except SystemExit as error:
        why = _first_paragraph(printed.getvalue())
        raise ConfigError(
            f"--train-args {args.train_args!r} is not valid for dstrl train"
            + (f": {why}" if why else "")
        ) from error
    if unknown:
        raise ConfigError(f"--train-args: dstrl train has no option {unknown[0]}")


def _check_cells(cells: list[Cell], args: SweepArgs) -> None:
    """ConfigError for what every run of an (env, algorithms) would fail on (seeds change
    none of it), before any starts."""
    checked = set()
    for cell in cells:
        if (cell.env, cell.algos) not in checked:
            checked.add((cell.env, cell.algos))
            options = ["--steps", str(args.steps), *_train_options(cell, args)]
            try:
                tyro.cli(TrainConfig, args=options, console_outputs=False).validate()
            except ConfigError as error:
                raise ConfigError(f"{' '.join(cell.algos)} on {cell.env}: {error}") from error


def _first_paragraph(box: str) -> str:
    """The first paragraph of the text in a box that tyro printed, under its title."""
    lines = [line.strip().strip("│╭╮╰╯").strip() for line in box.splitlines()]
    words: list[str] = []
    for line in lines[2:] if len(lines) > 2 else lines:  # title, rule
        if words and (not line or set(line) <= set("─-")):
            break
        words += line.split()
    return " ".join(words)


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
        family = family_of(algo)
        if runs_apart(algo):
            cells.append(Cell(env, (algo,), args.seed, args.out / env / PACKED / algo, args.seeds))
        else:
            shared.setdefault(family, []).append(algo)
    for family, algos in shared.items():
        path = args.out / env / PACKED / family
        cells.append(Cell(env, tuple(algos), args.seed, path, args.seeds))
    return cells


def _saved_members(cell: Cell) -> Cell:
    """``cell`` with its algorithms in the order of the population already in ``cell.path``
    (--algos given in another order name the same members); a ConfigError if that population
    has other members (other algorithms or seeds): a population cannot change them, so a
    resume's advice (give the saved values or leave them out) could not be followed."""
    try:
        saved = json.loads((cell.path / "config.json").read_text())
        algos = saved["algo"] if isinstance(saved["algo"], list) else [saved["algo"]]
        members = Cell(cell.env, tuple(algos), saved["seed"], cell.path, saved["seeds"])
    except (OSError, ValueError, KeyError, TypeError):
        return cell  # none yet, or damaged: the run says so itself
    own = (sorted(map(str, members.algos)), members.seed, members.seeds)
    if own != (sorted(cell.algos), cell.seed, cell.seeds):
        raise ConfigError(
            f"{cell.path} trains {members.name.removeprefix(cell.env + ' ')} as one population, "
            f"which cannot change its members to {cell.name.removeprefix(cell.env + ' ')}: sweep "
            "other algorithms or seeds into another --out"
        )
    return members


def command(cell: Cell, args: SweepArgs) -> list[str] | None:
    """The `dstrl train` command that finishes ``cell``; None if it is already finished.

    It is the same command whatever state the cell is in: ``--auto-resume`` starts the run, or
    continues it from its checkpoint (extending it to a larger ``--steps``).
    """
    options = _train_options(cell, args)
    _refuse_shorter(cell, args)
    if _finished(cell, args, options):
        return None
    if (cell.path / CHECKPOINT).exists():  # stopped, or to extend: checked before any starts
        resume_config(tyro.cli(TrainConfig, args=options, console_outputs=False), options)
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
        *_extra(args),
    ]


def _extra(args: SweepArgs) -> list[str]:
    """--train-args, split as a shell splits them."""
    try:
        return shlex.split(args.train_args)
    except ValueError as error:  # an unclosed quote
        raise ConfigError(f"--train-args {args.train_args!r}: {error}") from error


def _refuse_shorter(cell: Cell, args: SweepArgs) -> None:
    """ConfigError if ``cell`` holds a stopped run of more than --steps: a resume cannot shorten
    it, and it would fail once started."""
    if not (cell.path / CHECKPOINT).exists() or (cell.path / "summary.json").exists():
        return
    try:
        steps = json.loads((cell.path / "config.json").read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # the run says what is wrong itself
    if isinstance(steps, int) and steps > args.steps:
        raise ConfigError(
            f"{cell.path} is a stopped run of {steps:,} steps, more than --steps {args.steps:,}, "
            f"and a resume cannot shorten it: give --steps {steps}"
        )


def _finished(cell: Cell, args: SweepArgs, options: list[str]) -> bool:
    """Whether ``cell``'s run has trained --steps; a ConfigError if its summary cannot be read,
    if it ran with options other than the sweep gives (named, as a resume names them), or if it
    trained more than --steps and a report is asked for (it compares runs of one budget)."""
    summary = cell.path / "summary.json"
    if not summary.exists():
        return False
    try:
        steps = json.loads(summary.read_text())["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise TypeError(f"its steps are {steps!r}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{summary} cannot be read ({error}); delete it, and the sweep finishes that run "
            "from its checkpoint"
        ) from error
    if steps < args.steps:
        return False
    if steps > args.steps and args.report:  # the report compares like with like
        raise ConfigError(
            f"{cell.path} has trained {steps:,} steps, more than --steps {args.steps:,}, and the "
            f"report compares runs of one budget: give --steps {steps}, or --no-report"
        )
    resume_config(tyro.cli(TrainConfig, args=options, console_outputs=False), options)
    return True


STOPPED = (130, -signal.SIGTERM, -signal.SIGINT)  # a run stopped by a signal (before it began)
Ended = tuple[int, str, float]  # a run's exit code, last lines of stderr, and seconds


def execute(
    cmd: list[str],
    stopped: Callable[[], bool] = lambda: False,
    starting: Callable[[], object] = lambda: None,
    log: Path | None = None,
    noted: Callable[[str], object] = lambda line: None,
) -> Ended | None:
    """Run one training process; (exit code, the last lines it wrote to stderr, seconds), or
    None if the sweep was stopped before it began (else ``starting()`` is called first). Once
    ``stopped()`` is true (it is asked every second), the process is sent SIGTERM, so that it
    stops at a checkpoint. Its stderr is appended to ``log`` (a temporary file without one),
    after the command line, and each note it writes (``dstrl: note: ...``) is passed to
    ``noted`` as it comes."""
    if stopped():
        return None
    starting()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env[SWEEP_PID] = str(os.getpid())  # the run stops at a checkpoint if this process dies
    with ExitStack() as stack:
        if log is None:
            log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "stderr.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with log.open("ab") as written:  # appended to, whatever the child's writes
            written.write(f"$ {shlex.join(cmd)}\n".encode())
            written.flush()
            lines = _Lines(log, written.tell(), noted)
            with subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=written, env=env
            ) as process:
                while True:
                    with suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=1.0)
                        break
                    lines.read()
                    if stopped():
                        process.send_signal(signal.SIGTERM)
                        process.wait()
                        break
        lines.read(end=True)
    return process.returncode, " | ".join(lines.last), time.monotonic() - began


class _Lines:
    """The lines a process appends to a file, read as they come: its notes passed on, its last
    three lines kept."""

    def __init__(self, path: Path, offset: int, noted: Callable[[str], object]) -> None:
        self.path, self.offset, self.noted = path, offset, noted
        self.partial = b""
        self.last: deque[str] = deque(maxlen=3)

    def read(self, end: bool = False) -> None:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            text = self.partial + f.read()
            self.offset = f.tell()
        *complete, self.partial = text.split(b"\n")
        if end and self.partial:
            complete, self.partial = [*complete, self.partial], b""
        for raw in complete:
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                self.last.append(line[:500])  # shown in the sweep's line; whole in the log
            if line.startswith("dstrl: note: "):
                self.noted(line.removeprefix("dstrl: note: "))


DIVERGED = 3  # dstrl train's exit code when agents diverged


def _outcome(cell: Cell, code: int, error: str, seconds: float) -> str:
    if code in STOPPED:
        return f"stopped {cell.name} by a signal ({seconds:.0f} s)"
    if code < 0:  # ended by a signal it could not handle
        name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
        error = f"killed by {name}{_killed(cell, code == -signal.SIGKILL)}" + (
            f" | {error}" if error else ""
        )
    if code == DIVERGED:  # every agent (else it finished: see _report)
        return f"diverged {cell.name} (exit {code}): {error or 'no message'}; its log: {cell.log}"
    if code != 0:
        return f"FAILED {cell.name} (exit {code}): {error or 'no message'}; its log: {cell.log}"
    summary = json.loads((cell.path / "summary.json").read_text())
    methods = summary.get("methods", {cell.algos[0]: summary})
    finals = ", ".join(
        f"{name} {_mean(method['final_return']['mean'])}" for name, method in methods.items()
    )
    diverged = len(summary.get("diverged", []))
    left_out = f"; {diverged} agent(s) diverged, left out of the report" if diverged else ""
    return f"done {cell.name}: final return {finals} ({seconds:.0f} s){left_out}"


def _mean(value: float | None) -> str:
    return "– (every agent diverged)" if value is None else f"{value:.1f}"


def _killed(cell: Cell, sigkill: bool) -> str:
    """What a run killed from outside left: why it may have been, and whether a rerun continues
    it (from its checkpoint) or starts it afresh."""
    cause = " (out of memory?)" if sigkill else ""
    if (cell.path / CHECKPOINT).exists():
        return f"{cause}; its last checkpoint is kept"
    return f"{cause}; it had written no checkpoint: a rerun starts it afresh"


def run_sweep(args: SweepArgs) -> int:
    """Run the grid; prints a line per run as it finishes. Exit code 0 when all succeeded.
    One sweep at a time works in --out: two would start the same runs."""
    cells = plan(args)
    make_run_dir(args.out)
    with exclusive(args.out):
        return _sweep(args, cells)


def _sweep(args: SweepArgs, cells: list[Cell]) -> int:
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
    runner = partial(_run_ray, address=args.address) if args.backend == "ray" else _run_local
    runs, agents = [cell.path for cell, _ in todo], [len(c.algos) * c.seeds for c, _ in todo]
    progress = Progress(runs, args.steps, workers, args.progress_every, agents)
    # while runs go on, SIGTERM to the sweep alone (kill) stops them as Ctrl-C to its whole
    # process group does, instead of leaving them to train on with nobody to wait for them
    with handling(STOPS, signal.default_int_handler):
        ended = runner(todo, workers, progress)
    if ended["failed"] or ended["stopped"] or ended["diverged"]:
        print(_unfinished(ended))
        return 1
    if args.report:
        from dstrl.analysis.report import write_report

        write_report([cell.path for cell in cells], args.out / "report")  # this grid's runs
        print(f"report: {args.out / 'report' / 'report.md'}")
    return 0


def _unfinished(ended: dict[str, list[Cell]]) -> str:
    """The sweep's last line when some runs did not finish: which, and what to do."""
    failed, stopped, diverged = (ended.get(kind, []) for kind in ("failed", "stopped", "diverged"))
    said = [f"{len(failed)} run(s) failed ({_names(failed)})"] if failed else []
    said += [f"{len(stopped)} stopped by a signal"] if stopped else []
    fix = "fix the cause and rerun" if failed else "rerun"
    line = f"{' and '.join(said)}; {fix} the same command to continue" if said else ""
    if diverged:  # a rerun continues them with their saved settings: they would diverge again
        line += "; " if line else ""
        line += (
            f"{len(diverged)} run(s) diverged ({_names(diverged)}): a rerun continues them with "
            "the settings they diverged with; delete their directories to train them afresh, or "
            "sweep other --train-args into another --out"
        )
    return line


def _names(cells: list[Cell]) -> str:
    return ", ".join(c.name for c in cells[:5]) + (
        f" and {len(cells) - 5} more" if len(cells) > 5 else ""
    )


def _started(cell: Cell, progress: Progress) -> None:
    """Say that ``cell``'s run starts, and note it for the progress lines."""
    again = " (continues from its checkpoint)" if (cell.path / CHECKPOINT).exists() else ""
    print(f"start {cell.name}{again}", flush=True)
    progress.start(cell.path)


def _report(
    cell: Cell, result: Ended | None, ended: dict[str, list[Cell]], todo: int, progress: Progress
) -> None:
    """Say how ``cell``'s run ended (nothing if it never started), and count it in ``ended``
    and for the progress lines."""
    if result is None:
        return
    # finished all the same: a signal that came as it wrote its summary, or some agents
    # diverged (the report leaves them out; the others finished)
    if (result[0] in STOPPED or result[0] == DIVERGED) and _complete(cell):
        result = (0, *result[1:])
    progress.end(cell.path, result[0] == 0)
    ended[_kind(result[0])].append(cell)
    print(f"[{sum(map(len, ended.values()))}/{todo}] {_outcome(cell, *result)}", flush=True)


def _complete(cell: Cell) -> bool:
    """Whether ``cell``'s run wrote its summary for the steps it was asked to train."""
    try:
        summary = json.loads((cell.path / "summary.json").read_text())
        config = json.loads((cell.path / "config.json").read_text())
        return summary["steps"] == config["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _say_note(cell: Cell, note: str, heard: set) -> None:
    """Say a run's note, once per (env, algorithms): every seed's run says the same."""
    if (cell.env, cell.algos, note) not in heard:
        heard.add((cell.env, cell.algos, note))
        print(f"note from {cell.name}: {note}", flush=True)


def _say_progress(progress: Progress) -> None:
    line = progress.due()
    if line is not None:
        print(line, flush=True)


def _run_local(
    todo: list[tuple[Cell, list[str]]], workers: int, progress: Progress
) -> dict[str, list[Cell]]:
    stop = threading.Event()  # set when the sweep is stopped (Ctrl-C, SIGTERM)
    ended: dict[str, list[Cell]] = defaultdict(list)
    # a run's lines are said by the thread that runs it, in order: the driver said a run's end
    # after the same thread had started the next one
    saying = threading.Lock()

    heard: set[tuple[str, tuple[str, ...], str]] = set()  # notes said, once per (env, algos)

    def begin(cell: Cell, cmd: list[str]) -> None:
        def starting() -> None:
            with saying:
                _started(cell, progress)

        def noted(note: str) -> None:
            with saying:
                _say_note(cell, note, heard)

        result = execute(cmd, stop.is_set, starting, cell.log, noted)
        with saying:
            _report(cell, result, ended, len(todo), progress)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(begin, cell, cmd) for cell, cmd in todo}
        try:
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # a failure of the sweep itself, not of a run
                with saying:
                    _say_progress(progress)
        except KeyboardInterrupt:  # stop the runs at their checkpoints, then say so
            stop.set()
            for future in pending:
                future.cancel()
            for future in as_completed(pending):
                if not future.cancelled():
                    future.result()
            if ended["failed"] or ended["diverged"]:  # the interruption's line does not say
                print(_unfinished(ended), flush=True)
            raise
    return ended


def _kind(code: int) -> str:
    if code == DIVERGED:
        return "diverged"
    return "done" if code == 0 else "stopped" if code in STOPPED else "failed"


def _run_ray(
    todo: list[tuple[Cell, list[str]]], workers: int, progress: Progress, address: str | None
) -> dict[str, list[Cell]]:
    try:
        import ray
    except ImportError as error:
        raise ConfigError("--backend ray needs Ray: pip install -e '.[ray]'") from error
    ended: dict[str, list[Cell]] = defaultdict(list)

    @ray.remote(num_cpus=0)
    class Board:
        """What the driver and the tasks tell each other: which runs have started (the driver
        asks every second), and whether the sweep is stopped (each task asks every second)."""

        def __init__(self) -> None:
            self.stopped, self.started = False, []

        def stop(self) -> None:
            self.stopped = True

        def is_stopped(self) -> bool:
            return self.stopped

        def start(self, index: int) -> None:
            self.started.append(index)

        def started_since(self, count: int) -> list[int]:
            return self.started[count:]

    @ray.remote(num_cpus=1)
    def task(index: int, cmd: list[str], board, log: Path) -> tuple[Ended | None, list[str]]:
        # a future's wait: a task blocked in ray.get or ray.wait lends its CPU to another
        def stopped() -> bool:
            return board.is_stopped.remote().future().result()

        notes: list[str] = []  # said by the driver when the run ends
        start = lambda: board.start.remote(index).future().result()  # noqa: E731
        return execute(cmd, stopped, start, log, notes.append), notes

    started: list[int] = []
    heard: set[tuple[str, tuple[str, ...], str]] = set()  # notes said, once per (env, algos)

    def follow() -> None:  # the runs that started since last asked
        for index in ray.get(board.started_since.remote(len(started))):
            started.append(index)
            _started(todo[index][0], progress)

    def report(ref) -> None:
        cell, notes = futures.pop(ref), []
        try:
            result, notes = ray.get(ref)
        except ray.exceptions.RayError as error:  # its worker died, e.g. by the memory monitor
            why = str(error).strip().splitlines()[0] if str(error).strip() else ""
            result = (1, f"its Ray task failed ({type(error).__name__}: {why[:200]})", 0.0)
        for note in notes:
            _say_note(cell, note, heard)
        _report(cell, result, ended, len(todo), progress)

    queued = list(enumerate(todo))  # at most --workers in flight, on a cluster too

    def submit() -> None:
        while queued and len(futures) < workers:
            index, (cell, cmd) = queued.pop(0)
            futures[task.remote(index, cmd, board, cell.log)] = cell

    # Ray's own handlers: SIGTERM aborted the driver with a stack dump, its runs killed; after
    # Ctrl-C it waited for ever. Ours are set before Ray starts (a signal while it started was
    # a silent exit or a crash, its processes left running) and again after (it sets its own).
    stops = [signal.SIGINT, *STOPS]
    with handling(stops, signal.default_int_handler):
        try:
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            with handling(stops, signal.default_int_handler):
                board = Board.remote()
                futures: dict = {}
                submit()
                try:
                    while futures:
                        # a wait with a timeout: signals reach Python only between the waits
                        ready = ray.wait(list(futures), num_returns=1, timeout=1.0)[0]
                        follow()
                        for ref in ready:
                            report(ref)
                        submit()
                        _say_progress(progress)
                except KeyboardInterrupt:  # each running task stops its run at a checkpoint
                    ray.get(board.stop.remote())
                    while futures:
                        ref = ray.wait(list(futures), num_returns=1)[0][0]
                        follow()
                        report(ref)
                    if ended["failed"] or ended["diverged"]:
                        print(_unfinished(ended), flush=True)
                    raise
                return ended
        finally:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """ConfigError unless a Ray cluster's ``host:port`` answers: ``ray.init`` retries an
    unreachable one for ever, deaf to SIGTERM."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise ConfigError(
            f"--address {address}: no Ray cluster answers there ({error}); start one (ray "
            "start --head) or leave --address out for a local Ray runtime"
        ) from error
