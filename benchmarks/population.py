"""Cost of one TD3 update for populations of E agents trained in lockstep (design.md, Populations).

On a GPU a 256-wide MLP update is launch-bound, so stacking E agents into one batched kernel per
layer costs little more than one agent; on a CPU the cost grows with E. Synthetic batches, the
HalfCheetah sizes (obs 17, action 6), no environment:

    python benchmarks/population.py --device cuda --members 1 8 32
    python benchmarks/population.py --device cpu --members 1 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dstrl.agents.td3 import TD3, TD3Config
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.schedule import TopologySchedule

OBS, ACT = 17, 6


def update_seconds(algo: str, members: int, batch: int, device: str, steps: int) -> float:
    generator = torch.Generator(device).manual_seed(0)
    sparsity = None
    if algo != "td3":
        sparsity = SparsityConfig(
            topology="set" if algo == "ds-td3" else "static",
            schedule=TopologySchedule(update_period=1000, drop_fraction=0.05),
        )
    agent = TD3(
        OBS, -np.ones(ACT), np.ones(ACT), members, TD3Config(batch_size=batch), sparsity, generator
    )

    def batch_tensors():
        shape = (members, batch)
        return (
            torch.randn(*shape, OBS, device=device),
            torch.rand(*shape, ACT, device=device) * 2 - 1,
            torch.randn(*shape, device=device),
            torch.randn(*shape, OBS, device=device),
            torch.zeros(*shape, device=device),
        )

    data = [batch_tensors() for _ in range(8)]
    for i in range(20):
        agent.update(*data[i % 8])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        agent.update(*data[i % 8])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--steps", type=int, default=300, help="timed updates (1000 = one topology update)"
    )
    parser.add_argument("--algos", nargs="+", default=["td3", "ds-td3"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU, 1 thread"
    print(f"device: {name}; batch {args.batch}; {args.steps} updates per measurement")
    for algo in args.algos:
        one_agent = None
        for members in args.members:
            seconds = update_seconds(algo, members, args.batch, args.device, args.steps)
            one_agent = seconds if members == 1 else one_agent
            rate = members / seconds
            note = f", {rate * one_agent:.1f}x E=1" if members > 1 and one_agent else ""
            print(
                f"{algo:<7} E={members:<3} {seconds * 1e3:7.2f} ms/update, "
                f"{rate:8.0f} agent-updates/s{note}",
                flush=True,
            )


if __name__ == "__main__":
    main()
