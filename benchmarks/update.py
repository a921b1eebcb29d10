"""One agent's update on the CPU, µs: dense TD3 against DS-TD3, interleaved in one process.

Times ``agent.update`` alone (no environment, acting or replay), HalfCheetah sizes, 256x256,
synthetic batches, one thread, after a warm-up past the first topology update; rounds of
``--updates`` updates alternate between the agents, and medians are printed with each agent's
ratio to td3 (median of the per-round ratios). For sparse agents it also times the pruning of the
target networks after each soft update (``SparseTarget.after_polyak``, in place) and the masking
of the gradients (``MaskedLayers.mask_gradients``); ``--multiplied-masks`` adds each sparse agent
again with its gradients masked by a multiply, as on other devices (``/multiplied``), to set
against the CPU's compiled select:

    python benchmarks/update.py
    python benchmarks/update.py --densities 0.1 0.05 --rounds 10
    python benchmarks/update.py --densities λ --multiplied-masks --updates 1000

``λ`` is the paper's default sparsity; a density D is ``--density D --sparse-output`` (ERK over
every layer, computed by connections where the core chooses).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch

from dstrl.agents.td3 import TD3, TD3Config
from dstrl.sparse import engine
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.engine import MaskedLayers
from dstrl.sparse.target import SparseTarget

OBS, ACT, BATCH = 17, 6, 100


def synthetic_batches(seed: int, count: int = 16) -> list[tuple[torch.Tensor, ...]]:
    """``count`` random batches of one agent's transitions (HalfCheetah sizes), cycled through:
    an update's cost does not depend on the data."""
    data = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(1, BATCH, OBS, generator=data),
            torch.rand(1, BATCH, ACT, generator=data) * 2 - 1,
            torch.randn(1, BATCH, generator=data),
            torch.randn(1, BATCH, OBS, generator=data),
            torch.zeros(1, BATCH),
        )
        for _ in range(count)
    ]


@contextmanager
def multiplied_masks():
    """Agents built inside mask their gradients by a multiply (the path off the CPU)."""
    compiled = engine.compiled
    engine.compiled = lambda weight, mask: False
    try:
        yield
    finally:
        engine.compiled = compiled


def agents(densities: list[str], multiplied: bool = False) -> dict[str, TD3]:
    def build(sparsity: SparsityConfig | None) -> TD3:
        generator = torch.Generator().manual_seed(0)
        return TD3(OBS, -np.ones(ACT), np.ones(ACT), 1, TD3Config(), sparsity, generator)

    built = {"td3": build(None)}
    for d in densities:
        if d == "λ":
            sparsity = SparsityConfig()
        else:
            sparsity = SparsityConfig(density=float(d), sparse_output=True)
        built[f"ds-td3@{d}"] = build(sparsity)
        if multiplied:
            with multiplied_masks():
                built[f"ds-td3@{d}/multiplied"] = build(sparsity)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--densities", nargs="+", default=["λ", "0.05"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--updates", type=int, default=200, help="updates per round")
    parser.add_argument("--warmup", type=int, default=1_200)
    parser.add_argument(
        "--multiplied-masks",
        action="store_true",
        help="also time every sparse agent with its gradients masked by a multiply",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = synthetic_batches(seed=1)
    contenders = agents(args.densities, args.multiplied_masks)
    for agent in contenders.values():
        for i in range(args.warmup):
            agent.update(*batches[i % 16])

    pruning: list[float] = []
    masking: list[float] = []
    after_polyak, mask_gradients = SparseTarget.after_polyak, MaskedLayers.mask_gradients

    def pruned(target: SparseTarget) -> None:
        started = time.perf_counter()
        after_polyak(target)
        pruning.append(time.perf_counter() - started)

    def masked(layers: MaskedLayers, step: int | None = None) -> None:
        started = time.perf_counter()
        mask_gradients(layers, step)
        masking.append(time.perf_counter() - started)

    SparseTarget.after_polyak, MaskedLayers.mask_gradients = pruned, masked
    update_us: dict[str, list[float]] = defaultdict(list)
    pruning_us: dict[str, list[float]] = defaultdict(list)
    masking_us: dict[str, list[float]] = defaultdict(list)  # per update, one value per round
    for _ in range(args.rounds):
        for name, agent in contenders.items():
            pruning.clear()
            masking.clear()
            started = time.perf_counter()
            for i in range(args.updates):
                agent.update(*batches[i % 16])
            update_us[name].append((time.perf_counter() - started) / args.updates * 1e6)
            pruning_us[name].extend(t * 1e6 for t in pruning)
            masking_us[name].append(sum(masking) / args.updates * 1e6)
    SparseTarget.after_polyak, MaskedLayers.mask_gradients = after_polyak, mask_gradients

    dense = np.array(update_us["td3"])
    print(f"update of one agent, µs (median of {args.rounds} interleaved rounds), batch {BATCH}")
    for name, times in update_us.items():
        ratio = np.median(dense / np.array(times))
        line = f"  {name:<25} {np.median(times):7.0f} µs   td3/this {ratio:.3f}"
        if pruning_us[name]:
            line += f"   target pruning {np.median(pruning_us[name]):4.0f} µs per call"
        if name != "td3":
            line += f"   gradient masks {np.median(masking_us[name]):4.0f} µs per update"
        print(line)


if __name__ == "__main__":
    main()
