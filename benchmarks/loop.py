"""The whole training loop of one population, on any device: agent-steps per second and where a
lockstep step goes (act, environments, store, sample, update, the rest).

    python benchmarks/loop.py                                   # td3 static-td3 ds-td3 x 1, CPU
    python benchmarks/loop.py --algo td3 static-td3 ds-td3 --seeds 11 --device cuda
    python benchmarks/loop.py --algo sac ds-sac --seeds 16 --device cuda --vector-env async
    python benchmarks/loop.py --seeds 2 --vector-env async --overlap   # update while they step
    python benchmarks/loop.py --seeds 11 --device cuda --cuda-graph    # updates as CUDA graphs

The population trains ``--steps`` learning steps after a short random warm-up, without
evaluation or checkpoints. Stage times come from wrapping the loop's own stages; on a GPU every
stage ends with a synchronisation, so the split is exact and the total a little slower than an
unmeasured run (the unwrapped rate is measured first, in the same run). The projection is the
paper's grid, 5 tasks x 5 methods x 5 seeds x 1M steps = 125M agent-steps, at the measured rate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from dstrl.agents.base import ActorCritic
from dstrl.config import ConfigError, TrainConfig
from dstrl.data.replay import ReplayBuffer
from dstrl.graphs import GraphedUpdates
from dstrl.train import Trainer, train

GRID_AGENT_STEPS = 5 * 5 * 5 * 1_000_000
WARMUP = 1_000
STAGES = [  # (stage, class, method)
    ("act", Trainer, "_act"),
    ("environments and store", Trainer, "_step_envs"),
    ("store", ReplayBuffer, "add"),
    ("sample", ReplayBuffer, "sample"),
    ("update", ActorCritic, "update"),
    ("update", GraphedUpdates, "__call__"),
]


def run(args: argparse.Namespace, out: Path) -> dict:
    """One unmeasured run: its lockstep rate, and with ``--cuda-graph`` how many of its updates
    were replayed from graphs (a run that mostly ran eagerly would look like a slow graph run)."""
    graphed: list[GraphedUpdates] = []
    init = GraphedUpdates.__init__

    def remembered(self, *a, **k) -> None:
        init(self, *a, **k)
        graphed.append(self)

    config = TrainConfig(
        algo=tuple(args.algo) if len(args.algo) > 1 else args.algo[0],
        env=args.env,
        seeds=args.seeds,
        steps=WARMUP + args.steps,
        start_steps=WARMUP,
        eval_every=10**9,
        eval_episodes=1,
        checkpoint_every=10**9,
        device=args.device,
        vector_env=args.vector_env,
        overlap=args.overlap,
        cuda_graph=args.cuda_graph,
        tf32=args.tf32,
        env_workers=args.env_workers,
        out=out,
        progress=False,
        tensorboard=False,
    )
    GraphedUpdates.__init__ = remembered
    try:
        summary = train(config)
    finally:
        GraphedUpdates.__init__ = init
    assert summary is not None
    # the summary counts agent-steps: every member's steps
    agent_rate = summary["learning_steps_per_second"]
    graphs = {
        "updates": sum(g.agent.updates for g in graphed),
        "replays": sum(g.replays for g in graphed),
        "captures": sum(g.captures for g in graphed),
    }
    return {
        "members": config.members,
        "lockstep_per_second": agent_rate / config.members,
        "graphs": graphs if graphed else None,
    }


def timed(args: argparse.Namespace, out: Path) -> tuple[dict, dict[str, float]]:
    """``run`` with every stage wrapped in a timer (synchronising on a GPU)."""
    seconds: dict[str, float] = defaultdict(float)
    cuda = args.device.startswith("cuda")
    originals = [getattr(cls, method) for _, cls, method in STAGES]

    def wrap(name, fn):
        def stage(*a, **k):
            if name == "update" and "update" not in seconds:
                seconds.clear()  # the learning phase starts: the warm-up's stages do not count
            start = time.perf_counter()
            result = fn(*a, **k)
            if cuda:
                torch.cuda.synchronize()
            seconds[name] += time.perf_counter() - start
            return result

        return stage

    for (name, cls, method), original in zip(STAGES, originals, strict=True):
        setattr(cls, method, wrap(name, original))
    try:
        result = run(args, out)
    finally:
        for (_, cls, method), original in zip(STAGES, originals, strict=True):
            setattr(cls, method, original)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", nargs="+", default=["td3", "static-td3", "ds-td3"])
    parser.add_argument("--seeds", type=int, default=1, help="agents per algorithm")
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vector-env", choices=["sync", "async"], default="sync")
    parser.add_argument("--env-workers", type=int, help="worker processes for --vector-env async")
    parser.add_argument(
        "--overlap", action="store_true", help="queue each update before stepping (dstrl's option)"
    )
    parser.add_argument("--cuda-graph", action="store_true", help="dstrl's option (CUDA only)")
    parser.add_argument("--tf32", action="store_true", help="dstrl's option (CUDA only)")
    parser.add_argument("--steps", type=int, default=2_000, help="learning steps measured")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            plain = run(args, Path(tmp) / "plain")
        except ConfigError as error:
            raise SystemExit(f"loop.py: {error}") from None
        result, seconds = timed(args, Path(tmp) / "timed")
    members, rate = plain["members"], plain["lockstep_per_second"]
    per_step = {name: value / args.steps for name, value in seconds.items()}
    per_step["environments"] = per_step.pop("environments and store") - per_step["store"]
    measured = 1 / result["lockstep_per_second"]
    per_step["the rest"] = max(measured - sum(per_step.values()), 0.0)
    agent_rate = rate * members
    options = " ".join(f"--{o}" for o in ("overlap", "cuda_graph", "tf32") if getattr(args, o))
    where = " ".join(filter(None, [f"{args.env}, {args.device}", options]))
    where += f" ({args.vector_env} environments)"
    print(f"{' '.join(args.algo)} x {args.seeds} = {members} agents, {where}")
    print(f"  {rate:,.0f} lockstep steps/s = {agent_rate:,.0f} agent-steps/s (learning phase)")
    print("  one lockstep step, measured stage by stage:")
    for name, value in per_step.items():
        print(f"    {name:<13} {value * 1e3:8.3f} ms  {value / measured:5.1%}")
    hours = GRID_AGENT_STEPS / agent_rate / 3600
    print(f"  the paper's grid (125M agent-steps) at this rate: {hours:,.1f} hours")
    graphs = plain["graphs"]
    if graphs is not None:
        print(
            f"  CUDA graphs: {graphs['replays']:,} of {graphs['updates']:,} updates replayed, "
            f"{graphs['captures']} captured"
        )
    if args.json:
        record = dict(vars(args), json=None, agent_steps_per_second=agent_rate, grid_hours=hours)
        record["split_ms"] = {k: v * 1e3 for k, v in per_step.items()}
        record["graphs"] = graphs
        args.json.write_text(json.dumps(record))  # one line: device_session.sh appends JSON lines


if __name__ == "__main__":
    main()
