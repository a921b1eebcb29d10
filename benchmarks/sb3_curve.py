"""Learning curves of Stable-Baselines3 SAC or TD3 with dstrl's settings and evaluation protocol.

A correctness check against a widely used implementation: SB3 trains with the same network,
optimiser, batch, warm-up and target-update settings as the matching dstrl run, and is evaluated
with dstrl's own ``evaluate`` (same evaluation seeds, same episodes), so its ``evaluations.csv``
compares row for row with a ``dstrl train`` run's.

    python benchmarks/sb3_curve.py --algo sac --soft --steps 30000 --seeds 0 1 2 --out runs/sb3-sac
    dstrl train --algo sac --sac.tau 0.005 --sac.target-update-interval 1 --steps 30000 \\
        --seeds 3 --eval-every 5000 --out runs/sac-soft

Stable-Baselines3 is an optional extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from dstrl.data.envs import make_vector_env, route_mujoco_warnings
from dstrl.evaluation import evaluate


def make_model(algo: str, env_id: str, seed: int, soft: bool, start_steps: int | None):
    import gymnasium as gym
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    route_mujoco_warnings()
    env = gym.make(env_id)
    common = dict(
        buffer_size=1_000_000,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs=dict(net_arch=[256, 256]),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    if algo == "td3":  # dstrl's td3 defaults (the DS-TD3 release's settings)
        from dstrl.agents.td3 import TD3Config

        n = env.action_space.shape[0]
        decay = dict(weight_decay=TD3Config().weight_decay)  # Adam's L2, as the release's
        common["policy_kwargs"] = dict(net_arch=[256, 256], optimizer_kwargs=decay)
        return TD3(
            "MlpPolicy",
            env,
            learning_rate=1e-3,
            batch_size=100,
            tau=0.005,
            policy_delay=2,
            learning_starts=25_000 if start_steps is None else start_steps,
            action_noise=NormalActionNoise(np.zeros(n), 0.1 * np.ones(n)),
            **common,
        )
    return SAC(  # dstrl's sac defaults (the DS-SAC appendix), or soft updates with --soft
        "MlpPolicy",
        env,
        learning_rate=3e-4,
        batch_size=256,
        tau=0.005 if soft else 1.0,
        target_update_interval=1 if soft else 1000,
        ent_coef=0.2,
        learning_starts=10_000 if start_steps is None else start_steps,
        **common,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", choices=["sac", "td3"], default="sac")
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--start-steps", type=int, help="default: dstrl's for the family")
    parser.add_argument("--soft", action="store_true", help="SAC: Polyak 0.005 every step")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "evaluations.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "member", "seed", "return", "method"])  # dstrl's columns
        for member, seed in enumerate(args.seeds):
            model = make_model(args.algo, args.env, seed, args.soft, args.start_steps)
            eval_env = make_vector_env(args.env, 1)
            for round_index, step in enumerate(
                range(args.eval_every, args.steps + 1, args.eval_every)
            ):
                model.learn(total_timesteps=args.eval_every, reset_num_timesteps=False)
                returns = evaluate(
                    lambda obs, m=model: m.predict(obs, deterministic=True)[0],
                    eval_env,
                    args.eval_episodes,
                    [seed],
                    round_index,
                )
                writer.writerow([step, member, seed, float(returns[0]), f"sb3-{args.algo}"])
                file.flush()
                print(f"seed {seed} step {step}: return {returns[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
