"""Stepping a population's environments: milliseconds per lockstep step, random actions, for
stepping in this process (sync), Gymnasium's AsyncVectorEnv (a process and a message per
environment, shared memory) and dstrl's workers (a block of environments per worker).

    python benchmarks/envs.py                                  # 2 4 8 environments
    python benchmarks/envs.py --envs 16 32 64 128 --workers 8 15 --json docs/envs.json

Each configuration is timed over ``--steps`` steps after a warm-up; every kind runs once per
repetition, interleaved, and the median is reported (compare only within one run).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from dstrl.data.envs import _make, make_vector_env


def _gymnasium_async(env_id: str, envs: int) -> gym.vector.VectorEnv:
    makers = [functools.partial(_make, env_id) for _ in range(envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    return gym.vector.AsyncVectorEnv(makers, shared_memory=True, autoreset_mode=mode)


def seconds_per_step(envs: gym.vector.VectorEnv, steps: int) -> float:
    rng = np.random.default_rng(0)
    shape = (envs.num_envs, *envs.single_action_space.shape)
    actions = rng.uniform(-1, 1, size=(steps + 50, *shape)).astype(np.float32)
    envs.reset(seed=list(range(envs.num_envs)))
    for a in actions[:50]:
        envs.step(a)
    start = time.perf_counter()
    for a in actions[50:]:
        envs.step(a)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--envs", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help="dstrl worker counts to try (default: one per core but one)",
    )
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    workers = args.workers or [max((os.cpu_count() or 2) - 1, 1)]
    kinds = {"sync": lambda n: make_vector_env(args.env, n)}
    kinds["gymnasium async"] = lambda n: _gymnasium_async(args.env, n)
    for w in workers:
        kinds[f"dstrl, {w} workers"] = lambda n, w=w: make_vector_env(args.env, n, w)
    table: dict[str, dict[int, float]] = {kind: {} for kind in kinds}
    for n in args.envs:
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.repeats):
            for kind, make in kinds.items():
                envs = make(n)
                try:
                    times[kind].append(seconds_per_step(envs, args.steps))
                finally:
                    envs.close()
        for kind in kinds:
            table[kind][n] = statistics.median(times[kind]) * 1e3
    print(f"{args.env}, ms per lockstep step (median of {args.repeats}), {os.cpu_count()} cores")
    print(f"{'':<22}" + "".join(f"{n:>10}" for n in args.envs))
    for kind, row in table.items():
        print(f"{kind:<22}" + "".join(f"{row[n]:>10.3f}" for n in args.envs))
    if args.json:
        record = dict(vars(args), json=None, cores=os.cpu_count(), ms_per_step=table)
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
