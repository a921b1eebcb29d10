"""Training-phase throughput on HalfCheetah-v5, one thread: dstrl TD3 and SAC families vs SB3.

Every contender runs the same number of learning steps (after a short random warm-up, without
evaluation) at the same network (256x256) and batch size; contenders are interleaved and
repeated, and the medians are reported as ratios, so machine speed cancels out.

    python benchmarks/throughput.py                 # batch 100 and 256, 3 repetitions
    python benchmarks/throughput.py --steps 500 --repeats 1 --batch-sizes 100   # a quick look
    python benchmarks/throughput.py --contenders td3 ds-td3 ds-td3:online-mask   # no SB3
    python benchmarks/throughput.py --contenders sac ds-sac sb3-sac --batch-sizes 256
    python benchmarks/throughput.py --contenders td3 ds-td3 --densities 0.5 0.1 0.05

``--densities`` is the density axis: every sparse contender runs once per global density,
spread by ERK over every layer (``--density D --sparse-output``), as ``ds-td3@0.1``; without
it sparse contenders use their default λ (about 50% for ds-td3). ``--sparse-kernels`` is the
axis of how sparse layers are computed (``--sparse-kernels``; default auto, which computes
layers at density <= 0.3 by their connections), as ``ds-td3@0.1/masked``:

    python benchmarks/throughput.py --contenders td3 ds-td3 --densities 0.5 0.1 0.05 \
        --sparse-kernels auto masked --batch-sizes 100

Each sparse contender is compared with the dense algorithm of its family, and each dense dstrl
algorithm with SB3's; the targets (``TARGETS``) are printed beside the ratios.
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

from dstrl.agents.sac import SACConfig
from dstrl.agents.td3 import TD3Config
from dstrl.config import TrainConfig
from dstrl.data.envs import route_mujoco_warnings
from dstrl.train import train

ENV = "HalfCheetah-v5"
WARMUP = 1_000
DECAY = dict(weight_decay=TD3Config().weight_decay)  # dstrl's TD3 Adam (the release's L2)
# speed-ups over the family's dense algorithm (over SB3's for dstrl's dense ones) that the
# issues "DS-TD3 end to end" and "Real sparse speed on the CPU" ask for
TARGETS = {"td3": 1.2, "ds-td3": 0.97, "ds-td3@0.1": 1.5, "ds-td3@0.05": 2.0, "ds-sac@0.1": 1.5}


def dstrl_steps_per_second(contender: str, batch: int, steps: int) -> float:
    """``contender`` is an algo, optionally with a target-sparsity option (ds-td3:online-mask),
    a global ERK density over every layer (ds-td3@0.1) and a choice of sparse kernels
    (ds-td3@0.1/masked)."""
    contender, _, kernels = contender.partition("/")
    spec, _, density = contender.partition("@")
    algo, _, target = spec.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            algo=algo,
            target_sparsity=target or "magnitude",
            density=float(density) if density else None,
            sparse_output=bool(density),
            sparse_kernels=kernels or "auto",
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
            sac=SACConfig(batch_size=batch),
        )
        summary = train(config)
    assert summary is not None
    return summary["learning_steps_per_second"]


def has_sb3() -> bool:
    """Whether Stable-Baselines3 is installed (checked before anything is measured)."""
    from importlib.util import find_spec

    return find_spec("stable_baselines3") is not None


def sb3_steps_per_second(family: str, batch: int, steps: int) -> float:
    """SB3 TD3 or SAC with dstrl's defaults for that family (network, optimiser, targets)."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    route_mujoco_warnings()
    env = gym.make(ENV)
    n = env.action_space.shape[0]
    common = dict(
        buffer_size=WARMUP + steps,
        learning_starts=WARMUP,
        batch_size=batch,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs=dict(net_arch=[256, 256]),
        seed=0,
        device="cpu",
        verbose=0,
    )
    if family == "td3":
        model = TD3(
            "MlpPolicy",
            env,
            learning_rate=1e-3,
            tau=0.005,
            policy_delay=2,
            action_noise=NormalActionNoise(np.zeros(n), 0.1 * np.ones(n)),
            **{**common, "policy_kwargs": dict(net_arch=[256, 256], optimizer_kwargs=DECAY)},
        )
    else:  # the DS-SAC appendix: fixed temperature, hard target copy every 1000 steps
        model = SAC(
            "MlpPolicy",
            env,
            learning_rate=3e-4,
            tau=1.0,
            target_update_interval=1000,
            ent_coef=0.2,
            **common,
        )
    model.learn(total_timesteps=WARMUP)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2_000, help="learning steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 256])
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=["td3", "static-td3", "ds-td3", "sb3-td3"],
        help="dstrl algos (optionally algo:target-sparsity, e.g. ds-td3:online-mask), sb3-td3, "
        "sb3-sac",
    )
    parser.add_argument(
        "--densities",
        type=float,
        nargs="+",
        help="run every sparse contender at these global densities (ERK, every layer sparse)",
    )
    parser.add_argument(
        "--sparse-kernels",
        nargs="+",
        default=["auto"],
        choices=["auto", "masked", "sparse"],
        help="run every sparse contender with each of these (named ds-td3/masked; auto unnamed)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args()
    if any(name.startswith("sb3-") for name in args.contenders) and not has_sb3():
        parser.error(
            "the sb3-* contenders need Stable-Baselines3: pip install -e '.[bench]' (make bench "
            "does), or leave them out of --contenders"
        )
    torch.set_num_threads(1)
    dense = {"td3", "sac"}
    contenders = []
    for name in args.contenders:
        if name in dense or name.startswith("sb3-"):
            contenders.append(name)
            continue
        for density in args.densities or [None]:
            for kernels in args.sparse_kernels:
                at = "" if density is None else f"@{density:g}"
                contenders.append(name + at + ("" if kernels == "auto" else f"/{kernels}"))
    results: dict[int, dict[str, list[float]]] = {}
    for batch in args.batch_sizes:
        results[batch] = {name: [] for name in contenders}
        for _ in range(args.repeats):
            for name in contenders:
                if name.startswith("sb3-"):
                    rate = sb3_steps_per_second(name[4:], batch, args.steps)
                else:
                    rate = dstrl_steps_per_second(name, batch, args.steps)
                results[batch][name].append(rate)
                print(f"batch {batch:>3} {name:<18} {rate:7.1f} steps/s", flush=True)
    print("\nmedian training-phase env steps/s (one thread) and ratios")
    for batch, by_name in results.items():
        median = {name: statistics.median(rates) for name, rates in by_name.items()}
        line = ", ".join(f"{name} {rate:.0f}" for name, rate in median.items())
        print(f"batch {batch}: {line}")
        for name in contenders:
            family = name.split("/")[0].split("@")[0].split(":")[0].rsplit("-", 1)[-1]
            base = f"sb3-{name}" if name in ("td3", "sac") else family
            if name.startswith("sb3-") or base not in median:
                continue
            note = f"  (target >= {TARGETS[name]})" if name in TARGETS else ""
            # the same ratio within each repetition (adjacent measurements): robust to drift
            paired = [a / b for a, b in zip(by_name[name], by_name[base], strict=True)]
            print(
                f"  {name} / {base} = {median[name] / median[base]:.3f}{note}; per repetition: "
                f"median {statistics.median(paired):.3f}, range {min(paired):.3f}-{max(paired):.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
