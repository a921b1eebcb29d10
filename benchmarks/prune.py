"""DS-TD3's target pruning on the CPU, timed on the rows it meets in training, against a full top-k.

After every soft update a sparse target keeps, per member and layer, its largest-magnitude
entries (``dstrl.sparse.target_cpu``). This trains one DS-TD3 agent at the paper's λ for a while
(HalfCheetah sizes, 256x256, synthetic batches), records the rows its target pruning receives,
then times the compiled pruner on copies of each (hot cache; the shortest of five passes over
all rows) against the straightforward reference, ``torch.topk`` of the whole row by magnitude,
and checks that both keep the same entries. Rows are grouped by the number of swaps
(challengers that replace a connection):

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


def _compiled(row: np.ndarray, outside: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The compiled pruner on a copy of one row: µs, the pruned row and its flags."""
    target, flags = row[None].copy(), outside[None].copy()
    started = time.perf_counter()
    prune_rows(target, flags)
    return (time.perf_counter() - started) * 1e6, target[0], flags[0]


def _reference(row: np.ndarray, outside: np.ndarray) -> tuple[float, np.ndarray]:
    """The straightforward reference on one row: ``torch.topk`` by magnitude; µs, pruned row."""
    values, count = torch.from_numpy(row), int((~outside).sum())
    started = time.perf_counter()
    keep = values.abs().topk(count).indices
    pruned = torch.zeros_like(values)
    pruned[keep] = values[keep]
    return (time.perf_counter() - started) * 1e6, pruned.numpy()


def measure(rows: list[tuple[np.ndarray, np.ndarray]], passes: int = 5) -> list[dict]:
    """Both pruners on every row: the shortest time of ``passes``, swaps, and whether both keep
    the same entries.

    Each pass times every row once, so a row's repeats are a whole pass apart: the branch
    predictor cannot learn a row, as it never can in training (repeated back to back, the
    branching pruner before dd10dcd read 1.6x faster on average)."""
    results = []
    for row, outside in rows:  # the first pass also checks the results
        compiled_us, pruned, flags = _compiled(row, outside)
        reference_us, expected = _reference(row, outside)
        results.append(
            {
                "swaps": int((flags & ~outside).sum()),
                "compiled_us": compiled_us,
                "topk_us": reference_us,
                "equal": bool(np.array_equal(pruned, expected)),
            }
        )
    for _ in range(passes - 1):
        for result, pair in zip(results, rows, strict=True):
            result["compiled_us"] = min(result["compiled_us"], _compiled(*pair)[0])
        for result, pair in zip(results, rows, strict=True):
            result["topk_us"] = min(result["topk_us"], _reference(*pair)[0])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=3000, help="warm-up updates first")
    parser.add_argument("--rows", type=int, default=300, help="rows recorded and timed")
    parser.add_argument("--json", help="also write every row's measurements here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prune_rows(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.bool_))  # compile first
    results = measure(recorded_rows(args.updates, args.rows))
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
