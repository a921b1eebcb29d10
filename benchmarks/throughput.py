"""Training-phase throughput on HalfCheetah-v5, one thread: dstrl TD3 family vs SB3 TD3.

Every contender runs the same number of learning steps (after a short random warm-up, without
evaluation) at the same network (256x256) and batch size; contenders are interleaved and
repeated, and the medians are reported as ratios, so machine speed cancels out.

    python benchmarks/throughput.py                 # batch 100 and 256, 3 repetitions
    python benchmarks/throughput.py --steps 500 --repeats 1 --batch-sizes 100   # a quick look
    python benchmarks/throughput.py --contenders td3 ds-td3 ds-td3:online-mask   # no SB3

Targets (issue "DS-TD3 end to end"): ds-td3 >= 0.95x dstrl td3; dstrl td3 >= 1.2x SB3 TD3.
Stable-Baselines3 is an optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dstrl.agents.td3 import TD3Config
from dstrl.config import TrainConfig
from dstrl.train import train

ENV = "HalfCheetah-v5"
WARMUP = 1_000


def dstrl_steps_per_second(contender: str, batch: int, steps: int) -> float:
    """``contender`` is an algo, optionally with a target-sparsity option: ds-td3:online-mask."""
    algo, _, target = contender.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            algo=algo,
            target_sparsity=target or "magnitude",
            env=ENV,
            steps=WARMUP + steps,
            start_steps=WARMUP,
            eval_every=10**9,
            eval_episodes=1,
            out=Path(tmp) / "run",
            progress=False,
            tensorboard=False,
            checkpoint_every=10**9,
            td3=TD3Config(batch_size=batch),
        )
        summary = train(config)
    assert summary is not None
    return summary["learning_steps_per_second"]


def sb3_steps_per_second(batch: int, steps: int) -> float:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make(ENV)
    n = env.action_space.shape[0]
    model = TD3(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=WARMUP + steps,
        learning_starts=WARMUP,
        batch_size=batch,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        policy_delay=2,
        action_noise=NormalActionNoise(np.zeros(n), 0.1 * np.ones(n)),
        policy_kwargs=dict(net_arch=[256, 256]),
        seed=0,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=WARMUP)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2_000, help="learning steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 256])
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=["td3", "static-td3", "ds-td3", "sb3-td3"],
        help="dstrl algos (optionally algo:target-sparsity, e.g. ds-td3:online-mask) and sb3-td3",
    )
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    contenders = args.contenders
    results: dict[int, dict[str, list[float]]] = {}
    for batch in args.batch_sizes:
        results[batch] = {name: [] for name in contenders}
        for _ in range(args.repeats):
            for name in contenders:
                if name == "sb3-td3":
                    rate = sb3_steps_per_second(batch, args.steps)
                else:
                    rate = dstrl_steps_per_second(name, batch, args.steps)
                results[batch][name].append(rate)
                print(f"batch {batch:>3} {name:<11} {rate:7.1f} steps/s", flush=True)
    print("\nmedian training-phase env steps/s (one thread) and ratios")
    for batch, by_name in results.items():
        median = {name: statistics.median(rates) for name, rates in by_name.items()}
        line = ", ".join(f"{name} {rate:.0f}" for name, rate in median.items())
        print(f"batch {batch}: {line}")
        for name in (n for n in contenders if n not in ("td3", "sb3-td3")):
            print(f"  {name} / td3 = {median[name] / median['td3']:.3f}  (ds-td3 target >= 0.95)")
        if "sb3-td3" in median:
            print(f"  td3 / sb3-td3 = {median['td3'] / median['sb3-td3']:.3f}  (target >= 1.2)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
