"""DS-TD3's target pruning on the CPU, timed on the rows it meets in training, against a full top-k.

After every soft update a sparse target keeps, per member and layer, its largest-magnitude
entries (``dstrl.sparse.target_cpu``). This trains one DS-TD3 agent at the paper's λ for a while
(HalfCheetah sizes, 256x256, synthetic batches), records the rows its target pruning receives,
then times the compiled pruner on copies of each (hot cache) against the straightforward
reference, ``torch.topk`` of the whole row by magnitude, and checks that both keep the same
entries. Rows are grouped by the number of swaps (challengers that replace a connection):

    python benchmarks/prune.py
    python benchmarks/prune.py --updates 4000 --rows 400 --json prune.json

A ratio measured in one run, so it carries over between machines better than the times do.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from update import ACT, OBS, synthetic_batches  # benchmarks/update.py (run as a script)

import dstrl.sparse.target as sparse_target
from dstrl.agents.td3 import TD3, TD3Config
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.target_cpu import prune_rows

GROUPS = [(0, 0), (1, 8), (9, 32), (33, 128), (129, 10**9)]


def recorded_rows(updates: int, rows: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(target, outside) copies of the whole rows (one member's layer) that pruning received
    after ``updates`` warm-up updates, at most ``rows``; small layers (below 10k entries) left
    out."""
    generator = torch.Generator().manual_seed(seed)
    agent = TD3(OBS, -np.ones(ACT), np.ones(ACT), 1, TD3Config(), SparsityConfig(), generator)
    batches = synthetic_batches(seed + 1)
    for i in range(updates):
        agent.update(*batches[i % 16])
    recorded: list[tuple[np.ndarray, np.ndarray]] = []
    prune_layers = sparse_target.prune_layers

    def recording(targets, outsides, pointers, positions):
        for target, outside in zip(targets, outsides, strict=True):
            if target.shape[1] >= 10_000 and len(recorded) < rows:
                recorded.extend((t.copy(), o.copy()) for t, o in zip(target, outside, strict=True))
        return prune_layers(targets, outsides, pointers, positions)

    sparse_target.prune_layers = recording
    try:
        i = 0
        while len(recorded) < rows:
            agent.update(*batches[i % 16])
            i += 1
    finally:
        sparse_target.prune_layers = prune_layers
    return recorded[:rows]


def _best(work, repeats: int = 5) -> float:
    """The shortest of ``repeats`` timings of ``work()`` (which resets its own input), µs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) * 1e6


def measure(row: np.ndarray, outside: np.ndarray) -> dict:
    """The compiled pruner and the top-k reference on one row: times, swaps, and whether both
    keep the same entries."""
    target, flags = np.empty((1, row.size), np.float32), np.empty((1, row.size), np.bool_)

    def compiled():
        target[0], flags[0] = row, outside
        prune_rows(target, flags)

    reference_row = torch.from_numpy(row)
    count = int((~outside).sum())

    def reference():
        keep = reference_row.abs().topk(count).indices
        pruned = torch.zeros_like(reference_row)
        pruned[keep] = reference_row[keep]
        return pruned

    compiled_us, reference_us = _best(compiled), _best(reference)
    return {
        "swaps": int((flags[0] & ~outside).sum()),
        "compiled_us": compiled_us,
        "topk_us": reference_us,
        "equal": bool(np.array_equal(target[0], reference().numpy())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000, help="warm-up updates first")
    parser.add_argument("--rows", type=int, default=300, help="rows recorded and timed")
    parser.add_argument("--json", help="also write every row's measurements here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prune_rows(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.bool_))  # compile first
    results = [measure(*pair) for pair in recorded_rows(args.updates, args.rows)]
    if not all(r["equal"] for r in results):
        raise SystemExit("the compiled pruner and the top-k disagree on some row")
    print(f"{len(results)} rows of DS-TD3 targets (λ, 256x256, after {args.updates} updates)")
    print("| swaps | rows | compiled (median) | top-k (median) | top-k / compiled |")
    print("| --- | --- | --- | --- | --- |")
    for low, high in GROUPS:
        group = [r for r in results if low <= r["swaps"] <= high]
        if not group:
            continue
        compiled = float(np.median([r["compiled_us"] for r in group]))
        reference = float(np.median([r["topk_us"] for r in group]))
        label = f"{low}" if low == high else f"{low}+" if high > 10**8 else f"{low}–{high}"
        print(f"| {label} | {len(group)} | {compiled:.1f} µs | {reference:.1f} µs | "
              f"{reference / compiled:.1f}x |")  # fmt: skip
    compiled = float(np.mean([r["compiled_us"] for r in results]))
    reference = float(np.mean([r["topk_us"] for r in results]))
    print(f"| all (mean) | {len(results)} | {compiled:.1f} µs | {reference:.1f} µs | "
          f"{reference / compiled:.1f}x |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"updates": args.updates, "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
