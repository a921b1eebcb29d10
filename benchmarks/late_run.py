"""Throughput late in a run, where short benchmarks never look: dense TD3 on Walker2d-v5.

Over tens of thousands of steps, the weights of hidden units that have died (a ReLU never active
on the data) receive only weight decay and shrink into subnormal floats (|x| < 1.2e-38), which
many CPUs (Intel's among them) compute with slow microcode assists. dstrl flushes subnormals to
zero. This benchmark trains to ``--at`` steps and then measures learning-phase env steps/s:

- dstrl as it runs (subnormals flushed);
- dstrl with flushing switched off (what it did before);
- Stable-Baselines3 TD3 with the same settings (network, batch, learning rate, L2 weight decay).

Each is also measured right after its warm-up ("early"), and the share of subnormal values in
its weights and Adam moments is counted late in the run. Ratios, not absolute speeds, carry over
between machines; on CPUs without a subnormal penalty (AMD Zen's sgemm) late/early stays ~1
for all three.

    python benchmarks/late_run.py                           # at 45,000 steps, 3,000 measured
    python benchmarks/late_run.py --at 8000 --start-steps 2000 --steps 500   # a quick look
Stable-Baselines3 is an optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import pandas as pd
import torch

from dstrl.config import TrainConfig
from dstrl.data.envs import route_mujoco_warnings
from dstrl.train import train

ENV = "Walker2d-v5"
TINY = torch.finfo(torch.float32).tiny


def subnormal_share(tensors: list[torch.Tensor]) -> float:
    """Fraction of the values that are subnormal (nonzero and below the smallest normal)."""
    count = sum(int(((t != 0) & (t.abs() < TINY)).sum()) for t in tensors)
    return count / sum(t.numel() for t in tensors)


@contextmanager
def subnormals_kept():
    """dstrl as it was before: no flush-to-zero (train's call is made a no-op)."""
    original = torch.set_flush_denormal
    original(False)
    torch.set_flush_denormal = lambda on: False
    try:
        yield
    finally:
        torch.set_flush_denormal = original


def dstrl_run(args: argparse.Namespace, flush: bool) -> dict:
    """Train to ``--at`` steps, then ``--steps`` more; steps/s from train_metrics.csv rows."""
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            algo="td3",
            env=args.env,
            steps=args.at + args.steps,
            start_steps=args.start_steps,
            eval_every=10**9,
            eval_episodes=1,
            log_every=args.steps // 5,
            checkpoint_every=10**9,
            out=Path(tmp) / "run",
            progress=False,
            tensorboard=False,
        )
        if flush:
            train(config)
        else:
            with subnormals_kept():
                train(config)
        metrics = pd.read_csv(Path(tmp) / "run" / "train_metrics.csv")
        state = torch.load(Path(tmp) / "run" / "checkpoint.pt")["agent"]
    rate = metrics.set_index("step")["env_steps_per_second"]
    early = rate[(rate.index > args.start_steps) & (rate.index <= args.start_steps + args.steps)]
    late = rate[rate.index > args.at]
    tensors = [v for net in ("actor", "critic") for v in state[net].values()]
    for optimizer in ("actor_optimizer", "critic_optimizer"):
        for moments in state[optimizer]["state"].values():
            tensors += [v for v in moments.values() if torch.is_tensor(v) and v.dim()]
    return {
        "early": statistics.median(early),
        "late": statistics.median(late),
        "subnormal_share": subnormal_share(tensors),
    }


def sb3_run(args: argparse.Namespace) -> dict:
    """SB3 TD3 with dstrl's td3 settings, timed right after warm-up and at ``--at``."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_flush_denormal(False)  # SB3 does not flush
    route_mujoco_warnings()
    env = gym.make(args.env)
    n = env.action_space.shape[0]
    model = TD3(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=args.at + args.steps,
        learning_starts=args.start_steps,
        batch_size=100,
        tau=0.005,
        gamma=0.99,
        policy_delay=2,
        action_noise=NormalActionNoise(np.zeros(n), 0.1 * np.ones(n)),
        policy_kwargs=dict(net_arch=[256, 256], optimizer_kwargs=dict(weight_decay=2e-4)),
        seed=0,
        device="cpu",
        verbose=0,
    )

    def timed(steps: int) -> float:
        start = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return steps / (time.perf_counter() - start)

    model.learn(total_timesteps=args.start_steps)
    early = timed(args.steps)
    model.learn(total_timesteps=args.at - args.start_steps - args.steps, reset_num_timesteps=False)
    tensors = [p.detach() for p in model.policy.parameters()]
    for optimizer in (model.actor.optimizer, model.critic.optimizer):
        for moments in optimizer.state.values():
            tensors += [v for v in moments.values() if torch.is_tensor(v) and v.dim()]
    share = subnormal_share(tensors)
    return {"early": early, "late": timed(args.steps), "subnormal_share": share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=ENV)
    parser.add_argument("--at", type=int, default=45_000, help="steps trained before measuring")
    parser.add_argument("--steps", type=int, default=3_000, help="steps per measurement")
    parser.add_argument("--start-steps", type=int, default=25_000, help="random warm-up steps")
    parser.add_argument("--no-sb3", action="store_true", help="skip Stable-Baselines3")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.start_steps + args.steps < args.at:
        parser.error("need --start-steps + --steps < --at")
    if not args.no_sb3 and find_spec("stable_baselines3") is None:
        parser.error(
            "Stable-Baselines3 is not installed: pip install -e '.[bench]', or pass --no-sb3"
        )
    torch.set_num_threads(1)
    results = {
        "dstrl (subnormals flushed)": dstrl_run(args, flush=True),
        "dstrl (subnormals kept)": dstrl_run(args, flush=False),
    }
    if not args.no_sb3:
        results["SB3 TD3"] = sb3_run(args)
    print(f"{args.env}, dense TD3, one thread; env steps/s early and at step {args.at:,}\n")
    print("| contender | early | late | late / early | subnormal share |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(
            f"| {name} | {r['early']:.0f} | {r['late']:.0f} | {r['late'] / r['early']:.2f} | "
            f"{r['subnormal_share']:.2%} |"
        )
    if "SB3 TD3" in results:
        ratio = results["dstrl (subnormals flushed)"]["late"] / results["SB3 TD3"]["late"]
        print(f"\ndstrl / SB3 at step {args.at:,}: {ratio:.2f}")
    if args.json:
        report = {"args": vars(args), "results": results}
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
