"""Device operations per gradient step, by kind of step: what a GPU launches, counted on a CPU.

On a GPU an update of 256-wide networks is launch-bound, so the number of operations it
launches predicts its eager cost, and what a CUDA graph replays. This counts them without a
GPU: the aten operations of one gradient step (views and other metadata-only operations left
out), with layers computed masked-dense and targets pruned by tensor operations, as on a GPU.
HalfCheetah sizes (obs 17, action 6), 256x256, batch 100, synthetic batches:

    python benchmarks/launches.py
    python benchmarks/launches.py --algos td3 ds-td3 --members 1 32

A count, not a timing: the same on every machine.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dstrl.sparse.engine as engine
import dstrl.sparse.target as sparse_target
from dstrl.agents.sac import SAC, SACConfig
from dstrl.agents.td3 import TD3, TD3Config
from dstrl.sparse.config import SparsityConfig

OBS, ACT, BATCH = 17, 6, 100
VIEWS = {  # no kernel of their own
    "view", "_unsafe_view", "t", "transpose", "expand", "detach", "alias", "slice", "select",
    "unsqueeze", "squeeze", "permute", "as_strided", "split", "chunk", "unbind", "lift_fresh",
}  # fmt: skip


class Launches(TorchDispatchMode):
    """Counts the operations that launch a kernel, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name not in VIEWS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def agent(algo: str, members: int) -> TD3 | SAC:
    generator = torch.Generator().manual_seed(0)
    sparse = algo.startswith("ds-") or algo == "static-td3"
    sparsity = None
    if sparse:
        topology = "static" if algo == "static-td3" else "set"
        sparsity = SparsityConfig(topology=topology, kernels="masked")
    low, high = -np.ones(ACT), np.ones(ACT)
    if algo.endswith("sac"):
        config = SACConfig(batch_size=BATCH, tau=0.005, target_update_interval=1)
        return SAC(OBS, low, high, members, config, sparsity, generator)
    return TD3(OBS, low, high, members, TD3Config(batch_size=BATCH), sparsity, generator)


def count(algo: str, members: int) -> dict[str, Counter[str]]:
    """Operations of each kind of gradient step, after 1,200 updates (past a topology update,
    so that the sparse targets prune)."""
    a = agent(algo, members)
    g = torch.Generator().manual_seed(1)
    batch = (
        torch.randn(members, BATCH, OBS, generator=g),
        torch.rand(members, BATCH, ACT, generator=g) * 2 - 1,
        torch.randn(members, BATCH, generator=g),
        torch.randn(members, BATCH, OBS, generator=g),
        torch.zeros(members, BATCH),
    )
    for _ in range(1_200):
        a.update(*batch)
    kinds = {}
    for _ in range(2):
        a.updates += 1
        with Launches() as launches:
            a.gradient_step(*batch, None)
        kinds[f"kind {a._step_kind()}"] = launches.counts
        a.restructure(batch[0], batch[1])
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--algos", nargs="+", default=["td3", "static-td3", "ds-td3", "sac", "ds-sac"]
    )
    parser.add_argument("--members", type=int, nargs="+", default=[1])
    parser.add_argument("--top", type=int, default=6, help="most frequent operations shown")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # as on a GPU: gradients masked by a multiply, targets pruned by tensor operations (the
    # CPU's compiled kernels run outside torch's dispatch, where nothing would count them)
    engine.compiled = lambda weight, mask: False
    sparse_target.compiled = lambda target, outside: False
    print("operations per gradient step (TD3: kind True adds the delayed actor step and the")
    print("target updates; SAC: kind True is every step with soft target updates)")
    for algo in args.algos:
        for members in args.members:
            for kind, counts in count(algo, members).items():
                top = ", ".join(f"{name} {n}" for name, n in counts.most_common(args.top))
                print(f"{algo:>10} E={members:<3} {kind:<10} {sum(counts.values()):4d}  ({top})")


if __name__ == "__main__":
    main()
