"""`dstrl train | eval | export | report | sweep`. Errors print one line, never a traceback.

Exit codes: 0 done; 1 the run directory cannot be created, locked or written; 2 bad input (an
option, a run directory, a checkpoint); 3 an agent diverged; 130 stopped by Ctrl-C, SIGTERM or
SIGUSR1 (a checkpoint lets ``--resume`` continue).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from dstrl.analysis.runs import RunError
from dstrl.config import ConfigError, TrainConfig
from dstrl.errors import CaptureError, CheckpointError, PolicyError, WorkerError
from dstrl.health import DivergedError, Health, advice
from dstrl.helptext import DEFAULT_IN_DOCSTRING, one_paragraph_docstrings
from dstrl.resume import (
    finished_without_checkpoint,
    given_options,
    resume_config,
    start_or_resume,
)
from dstrl.rundir import CHECKPOINT, RunDirError, describe
from dstrl.signals import STOPS, handling, stop_with_sweep
from dstrl.sweep import SweepArgs, run_sweep

one_paragraph_docstrings()


@dataclass
class EvalArgs:
    """Evaluate trained agents with their deterministic policy: the agents of a run directory,
    or a policy file written by ``dstrl export``."""

    run: tyro.conf.Positional[Path]
    """Run directory written by ``dstrl train``, or a file written by ``dstrl export``."""
    episodes: int = 10
    """Episodes per agent."""
    device: str = "cpu"
    """Torch device (run directories only; exported policies run on the CPU)."""


@dataclass
class ExportArgs:
    """Write the trained actors of a run to a safetensors file, for use without dstrl's
    training stack (``dstrl.load_policy``)."""

    run: tyro.conf.Positional[Path]
    """Run directory written by ``dstrl train``."""
    out: Path
    """The file to write, e.g. policy.safetensors."""
    member: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Export this member (agent) only: 0 is the first seed (default: every member)."""


@dataclass
class ReportArgs:
    """Turn finished runs into the paper's table (report.md, report.csv) and figures."""

    runs: Annotated[tyro.conf.Positional[tuple[Path, ...]], DEFAULT_IN_DOCSTRING]
    """Run directories, or directories to search for runs (at least one)."""
    out: Path = Path("report")
    """Where report.md, report.csv and the PNG figures go."""
    baseline: Annotated[str | None, DEFAULT_IN_DOCSTRING] = None
    """Method whose final return the others must reach (default: the dense algorithm of each
    method's family, td3 or sac, where present)."""


def run_train(config: TrainConfig, argv: list[str]) -> int:
    from dstrl.train import StoppedAtCheckpoint, check_config, check_new_run_dir, train

    if config.resume and config.auto_resume:
        raise ConfigError("give --resume or --auto-resume, not both")
    if config.resume:  # in --out, or where the same options without it put the run
        config = resume_config(config, argv)
    elif config.auto_resume:
        config = start_or_resume(config, argv)
    if config.resume and finished_without_checkpoint(config):  # a requeued job's rerun
        print(f"{config.run_dir} has finished its {config.steps:,} steps; nothing to do")
        return 0
    check_config(config)  # bad input is one line, with no note before it
    if not config.resume:
        check_new_run_dir(config.run_dir)
    for note in config.notes(given_options(argv)):
        print(f"dstrl: note: {note}", file=sys.stderr)
    try:
        summary = train(config)
    except StoppedAtCheckpoint:  # which --resume continues; SIGTERM: SystemExit(130)
        return 130
    except KeyboardInterrupt as stop:  # before training began, or a second Ctrl-C
        if stop.args:
            again = f"dstrl train --out {config.run_dir} --auto-resume"
            if (config.run_dir / "checkpoint.pt").exists():
                print(
                    f"dstrl: {stop.args[0]}: continue from its checkpoint with {again}",
                    file=sys.stderr,
                )
            else:
                print(
                    f"dstrl: {stop.args[0]}, before its first checkpoint: start it again "
                    f"with {again}",
                    file=sys.stderr,
                )
        else:
            kept = "the run is as it was" if config.resume else "nothing was saved"
            print(f"dstrl: interrupted before training began; {kept}", file=sys.stderr)
        return 130
    for method in summary["methods"].values():
        final = method["final_return"]
        flops = method["flops"]["run_ratio"]
        flops = "no learning step" if flops is None else f"FLOPs over the run {flops:.2f}x dense"
        live = sum(value is not None for value in final["per_seed"])
        returns = (
            "every agent diverged"
            if final["mean"] is None
            else f"final return {final['mean']:.1f} ± {final['std']:.1f} over {live} seed(s)"
        )
        print(
            f"{method['algo']} on {config.env}: {returns}; params "
            f"{method['params']['ratio']:.2f}x dense, {flops}"
        )
    agents = f"{config.members} agent{'s' if config.members > 1 else ''}"
    print(
        f"{agents}, {summary['env_steps_per_second']:.0f} env steps/s in all; results in "
        f"{config.run_dir}"
    )
    if summary["diverged"]:
        health = Health(summary["seeds"], advice(config.family, config.agent.learning_rate))
        health.load_state_dict(summary["diverged"])
        print(f"dstrl: error: {health.message(None)}", file=sys.stderr)
        return 3
    return 0


def run_eval(args: EvalArgs) -> int:
    from dstrl.data.envs import make_vector_env
    from dstrl.evaluation import evaluate

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be positive, got {args.episodes}")
    if not args.run.exists():
        raise ConfigError(
            f"{args.run} does not exist: give a run directory, or a policy file of dstrl export"
        )
    if args.run.is_file():
        from dstrl.data.envs import EnvError, check_env
        from dstrl.policy import load_policy

        policy = load_policy(args.run)
        env_id, seeds, step, act = policy.env, policy.seeds, policy.metadata["step"], policy
        try:  # a registered id only: Gymnasium imports the module of a "module:Env-v0" id
            check_env(env_id, trusted=False)
        except EnvError as error:
            raise PolicyError(f"{args.run}: {error}") from error
        diverged = set(policy.metadata.get("diverged", []))
        methods = policy.metadata.get("methods", [policy.metadata["algo"]] * len(seeds))
    else:
        from dstrl.train import load_trained, member_methods, member_seeds

        trained = load_trained(args.run, args.device)
        step, diverged = trained.step, set(trained.diverged)
        env_id, seeds = trained.config.env, member_seeds(trained.config)
        methods = member_methods(trained.config)

        def act(obs):
            return trained.agent.act(obs, explore=False)

    env = make_vector_env(env_id, len(seeds))
    returns = evaluate(act, env, args.episodes, seeds, round_index=10**6)
    env.close()
    for member, (seed, value) in enumerate(zip(seeds, returns, strict=True)):
        who = f"{methods[member]} seed {seed}"
        if member in diverged:
            print(f"{who}: diverged in training (halted; see summary.json)")
        else:
            episodes = f"{args.episodes} episode{'s' if args.episodes > 1 else ''}"
            print(f"{who}: return {value:.1f} over {episodes} (step {step})")
    for method in dict.fromkeys(methods):
        finished = [
            r
            for member, r in enumerate(returns)
            if member not in diverged and methods[member] == method
        ]
        if len(finished) > 1:  # one agent's line says it all
            print(
                f"{method} mean {np.mean(finished):.1f} ± {np.std(finished):.1f} over "
                f"{len(finished)} agents"
            )
    return 0


def run_export(args: ExportArgs) -> int:
    from dstrl.policy import export_policy

    if not args.run.is_dir():
        raise ConfigError(f"{args.run} is not a run directory")
    policy = export_policy(args.run, args.out, args.member)
    members = f"member {args.member}" if args.member is not None else f"{policy.members} member(s)"
    algo = policy.metadata["algo"]
    algo = " ".join(algo) if isinstance(algo, list | tuple) else algo  # a mixed population's
    print(
        f"wrote {args.out}: {algo} on {policy.env}, {members}, step "
        f"{policy.metadata['step']:,}; load it with dstrl.load_policy({str(args.out)!r})"
    )
    return 0


def run_report(args: ReportArgs) -> int:
    from dstrl.analysis.report import markdown, write_report

    if not args.runs:
        raise ConfigError("give the run directories to report on, e.g. dstrl report runs/sweep")
    table = write_report(list(args.runs), args.out, args.baseline)
    print(markdown(table))
    print(f"\nwritten: {args.out / 'report.md'}, {args.out / 'report.csv'} and figures")
    return 0


def _stop_by_signal(hint: str) -> Callable:
    """SIGTERM (a scheduler's stop, ``kill``) or SIGUSR1 outside a training loop or a sweep's
    runs, which handle them themselves, ends the process at once with a line and exit code 130,
    where it used to end it silently (143, 138). It raises nothing: an exception raised while a
    C extension is imported or calls back into Python (MuJoCo's warnings) can be swallowed or
    abort."""

    def stop(signum, frame):
        with suppress(Exception):  # a write the signal interrupted cannot be reentered
            sys.stdout.flush()
            name = signal.Signals(signum).name
            print(f"dstrl: stopped by {name}{hint}", file=sys.stderr, flush=True)
        os._exit(130)

    return stop


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with handling(STOPS, _stop_by_signal("; nothing was done")):  # the command line is read
        stop_with_sweep()
        command = tyro.extras.subcommand_cli_from_dict(
            {
                "train": TrainConfig,
                "eval": EvalArgs,
                "export": ExportArgs,
                "report": ReportArgs,
                "sweep": SweepArgs,
            },
            args=argv,
            prog="dstrl",
            description="Dynamic sparse training for deep reinforcement learning.",
        )
        hint = {
            TrainConfig: "; nothing is lost: rerun the same command, with --auto-resume (not "
            "--resume)",
            SweepArgs: "; rerun the same command to continue it",
        }.get(type(command), "")
        with handling(STOPS, _stop_by_signal(hint)):
            return _run(command, argv)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that memory ran out: Python's MemoryError, or torch's allocators
    (CPU: "can't allocate memory"; CUDA: "out of memory"), without importing torch."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or (
        "out of memory" in text or "can't allocate memory" in text
    )


def _run(command: object, argv: list[str]) -> int:
    try:
        if isinstance(command, EvalArgs):
            return run_eval(command)
        if isinstance(command, ExportArgs):
            return run_export(command)
        if isinstance(command, ReportArgs):
            return run_report(command)
        if isinstance(command, SweepArgs):
            return run_sweep(command)
        return run_train(command, argv[1:])
    except (ConfigError, CheckpointError, RunError, PolicyError) as error:
        print(f"dstrl: error: {error}", file=sys.stderr)
        return 2
    except DivergedError as error:
        print(f"dstrl: error: {error}", file=sys.stderr)
        return 3
    except (RunDirError, WorkerError, CaptureError) as error:
        print(f"dstrl: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"dstrl: error: {describe(error)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as error:  # torch's OutOfMemoryError is a RuntimeError
        if not out_of_memory(error):
            raise
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else "MemoryError"
        advice = ""
        if isinstance(command, TrainConfig) and (command.run_dir / CHECKPOINT).exists():
            advice = (
                f": its checkpoint is intact; continue it with dstrl train --out "
                f"{command.run_dir} --resume where there is more memory (its settings are fixed)"
            )
        elif isinstance(command, TrainConfig):
            advice = (
                ": lower what the run holds (--seeds, --buffer-size, the hidden sizes or the "
                "batch size) and start it again, with --auto-resume (it clears what this "
                "attempt left)"
            )
        print(f"dstrl: error: out of memory ({reason}){advice}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = "; rerun the same command to continue it" if isinstance(command, SweepArgs) else ""
        print(f"dstrl: interrupted{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
