"""`dstrl train | eval | report | sweep`. Errors a user can fix exit with code 2, no traceback."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tyro

from dstrl.analysis.runs import RunError
from dstrl.checkpoint import CheckpointError, load_checkpoint
from dstrl.config import ConfigError, TrainConfig
from dstrl.sweep import SweepArgs, run_sweep

# Options that may be given together with --resume; everything else comes from config.json.
RESUME_OVERRIDES = {"steps", "device", "threads", "progress", "tensorboard"}


@dataclass
class EvalArgs:
    """Evaluate the agents saved in a run directory with their deterministic policy."""

    run: tyro.conf.Positional[Path]
    """Run directory written by ``dstrl train``."""
    episodes: int = 10
    """Episodes per agent."""
    device: str = "cpu"
    """Torch device."""


@dataclass
class ReportArgs:
    """Turn finished runs into the paper's table (report.md, report.csv) and figures."""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories, or directories to search for runs."""
    out: Path = Path("report")
    """Where report.md, report.csv and the PNG figures go."""
    baseline: str | None = None
    """Method whose final return the others must reach (default: the dense algorithm of each
    method's family, td3 or sac, where present)."""


def _given_options(argv: list[str]) -> set[str]:
    names = set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            names.add(name.removeprefix("no_"))
    return names


def load_run_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.json"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a dstrl run directory (no config.json)")
    try:
        return TrainConfig.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ConfigError(f"{path} is not a valid dstrl configuration ({error})") from error


def resume_config(parsed: TrainConfig, argv: list[str]) -> TrainConfig:
    """The saved configuration of ``--out``, with the few options a resume may change."""
    given = _given_options(argv) - {"resume", "out"}
    extra = given - RESUME_OVERRIDES
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in sorted(extra))
        raise ConfigError(
            f"--resume continues a run with its saved configuration; {flags} cannot change "
            f"(only {', '.join('--' + n for n in sorted(RESUME_OVERRIDES))} can)"
        )
    if parsed.out is None:
        raise ConfigError("--resume needs --out, the run directory to continue")
    saved = load_run_config(parsed.out)
    changes = {name: getattr(parsed, name) for name in given}
    if "steps" in changes and changes["steps"] < saved.steps:
        raise ConfigError(
            f"--steps can only grow on resume (the run was started with {saved.steps})"
        )
    return replace(saved, **changes, out=parsed.out, resume=True)


def run_train(config: TrainConfig, argv: list[str]) -> int:
    from dstrl.train import train

    if config.resume:
        config = resume_config(config, argv)
    summary = train(config)
    if summary is None:
        return 130  # stopped by a signal; the checkpoint lets --resume continue
    final = summary["final_return"]
    flops = summary["flops"]["run_ratio"] or summary["flops"]["train_ratio"]
    print(
        f"{config.algo} on {config.env}: final return {final['mean']:.1f} ± {final['std']:.1f}"
        f" over {len(summary['seeds'])} seed(s); params {summary['params']['ratio']:.2f}x"
        f" dense, FLOPs over the run {flops:.2f}x dense; "
        f"{summary['env_steps_per_second']:.0f} env steps/s; results in {config.run_dir}"
    )
    return 0


def run_eval(args: EvalArgs) -> int:
    from dstrl.data.envs import make_vector_env
    from dstrl.evaluation import evaluate
    from dstrl.train import build_agent, member_seeds

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be positive, got {args.episodes}")
    config = replace(load_run_config(args.run), device=args.device, out=args.run)
    agent = build_agent(config)
    state = load_checkpoint(args.run)
    agent.load_state_dict(state["agent"])
    seeds = member_seeds(config)
    env = make_vector_env(config.env, config.seeds)
    returns = evaluate(
        lambda o: agent.act(o, explore=False), env, args.episodes, seeds, round_index=10**6
    )
    env.close()
    for seed, value in zip(seeds, returns, strict=True):
        print(
            f"seed {seed}: return {value:.1f} over {args.episodes} episodes (step {state['step']})"
        )
    print(f"mean {np.mean(returns):.1f} ± {np.std(returns):.1f}")
    return 0


def run_report(args: ReportArgs) -> int:
    from dstrl.analysis.report import markdown, write_report

    table = write_report(list(args.runs), args.out, args.baseline)
    print(markdown(table))
    print(f"\nwritten: {args.out / 'report.md'}, {args.out / 'report.csv'} and figures")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = tyro.extras.subcommand_cli_from_dict(
        {
            "train": TrainConfig,
            "eval": EvalArgs,
            "report": ReportArgs,
            "sweep": SweepArgs,
        },
        args=argv,
        prog="dstrl",
        description="Dynamic sparse training for deep reinforcement learning.",
    )
    try:
        if isinstance(command, EvalArgs):
            return run_eval(command)
        if isinstance(command, ReportArgs):
            return run_report(command)
        if isinstance(command, SweepArgs):
            return run_sweep(command)
        return run_train(command, argv[1:])
    except (ConfigError, CheckpointError, RunError) as error:
        print(f"dstrl: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dstrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
