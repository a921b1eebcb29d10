"""One stacked sparse layer's three training products, by connections vs dense sgemm, one thread.

For each layer size, batch and density: the time of forward, input gradient and weight gradient
of dstrl's sparse kernels (``dstrl.sparse.kernels``) against the dense products that a
masked-dense layer runs (``torch.bmm``: MKL's sgemm), measured in the same run, and the
speed-up. GFLOP/s count only the useful work: 2 · batch · connections per product for the
kernels, 2 · batch · n_out · n_in for sgemm.

A second dense reference, the last column: the three products by oneDNN (in the same torch
build, ``torch.ops.mkldnn._linear_pointwise``, one call per member), which dstrl does not use,
over the kernels' time. On an AMD EPYC with AVX-512 (Zen 5) MKL's sgemm ran at about 107 GFLOP/s,
the peak of AVX2 code there, and oneDNN's at 165–200 (``benchmarks/dense_gemm.py`` measures what
that would mean for an update).

    python benchmarks/sparse_layer.py                      # 256x256, batch 100 and 256
    python benchmarks/sparse_layer.py --sizes 256 1024 --densities 0.1 --json out.json

The density under which ``auto`` picks the kernels (``dstrl.sparse.compute.SPARSE_BELOW``) comes
from this table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dstrl.nets import feature_major
from dstrl.sparse import kernels
from dstrl.sparse.kernels import Connections
from dstrl.sparse.masks import random_mask


def seconds(fn, min_time: float = 0.2) -> float:
    """Median seconds per call over repeats of at least ``min_time`` each."""
    fn()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - start > min_time / 5:
            break
        calls *= 2
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return float(np.median(runs))


def measure(size: int, batch: int, density: float, members: int) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = random_mask(members, size, size, density, g)
    weight = torch.randn(members, size, size, generator=g) * mask
    bias = torch.randn(members, size, generator=g)
    # masked dense, batch-major as dstrl's dense path runs it
    x = torch.randn(members, batch, size, generator=g).relu()
    grad = torch.randn(members, batch, size, generator=g)
    dense = {
        "forward": lambda: torch.baddbmm(bias.unsqueeze(1), x, weight.mT),
        "input gradient": lambda: torch.bmm(grad, weight),
        "weight gradient": lambda: torch.bmm(grad.mT, x),
    }
    # by connections, feature-major, the batch padded as dstrl's networks pad it
    c = Connections.of(mask)
    chosen = np.arange(members)
    xt, gt = feature_major(x), feature_major(grad)
    out = torch.zeros_like(weight)
    sparse = {
        "forward": lambda: kernels.forward(weight, bias, c, chosen, xt),
        "input gradient": lambda: kernels.input_gradient(weight, c, chosen, gt, xt),
        "weight gradient": lambda: kernels.weight_gradient(c, chosen, xt, gt, out)[0],
    }
    onednn = _onednn(weight, bias, x, grad)
    connections = int(mask.sum())
    row = {"size": size, "batch": batch, "density": density, "members": members}
    for product in dense:
        t_dense, t_sparse = seconds(dense[product]), seconds(sparse[product])
        row[product] = {
            "dense_us": t_dense * 1e6,
            "sparse_us": t_sparse * 1e6,
            "dense_gflops": 2 * batch * members * size * size / t_dense / 1e9,
            "sparse_gflops": 2 * batch * connections / t_sparse / 1e9,
        }
        if onednn is not None:
            row[product]["onednn_us"] = seconds(onednn[product]) * 1e6
    total_sparse = sum(row[p]["sparse_us"] for p in dense)
    row["speedup"] = sum(row[p]["dense_us"] for p in dense) / total_sparse
    if onednn is not None:
        row["speedup_vs_onednn"] = sum(row[p]["onednn_us"] for p in dense) / total_sparse
    return row


def _onednn(weight, bias, x, grad) -> dict | None:
    """The three dense products by oneDNN's linear, member by member; None where this torch
    build has no oneDNN."""
    linear = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if linear is None or not torch.backends.mkldnn.is_available():
        return None
    members = range(weight.shape[0])

    def stacked(a, b, c=None):  # a · bᵀ (+ c) per member
        return [linear(a[e], b[e], None if c is None else c[e], "none", [], "") for e in members]

    return {
        "forward": lambda: stacked(x, weight, bias),
        "input gradient": lambda: stacked(grad, weight.mT),
        "weight gradient": lambda: stacked(grad.mT, x.mT),
    }


def cpu_name() -> str:
    """The CPU's model name (absolute speeds differ between machines; ratios carry over)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256], help="n_in = n_out")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 256])
    parser.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05])
    parser.add_argument("--members", type=int, default=2, help="stacked networks (twin critics)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{cpu_name()}, one thread, {args.members} members")
    print(
        "size batch density | µs dense / sparse (GFLOP/s dense / sparse) per product | speedup"
        " | vs oneDNN"
    )
    for size in args.sizes:
        for batch in args.batch_sizes:
            for density in args.densities:
                row = measure(size, batch, density, args.members)
                rows.append(row)
                cells = "  ".join(
                    f"{row[p]['dense_us']:6.0f}/{row[p]['sparse_us']:5.0f} "
                    f"({row[p]['dense_gflops']:3.0f}/{row[p]['sparse_gflops']:3.0f})"
                    for p in ("forward", "input gradient", "weight gradient")
                )
                versus = row.get("speedup_vs_onednn")
                onednn = "    -" if versus is None else f"{versus:5.2f}x"
                print(
                    f"{size:4d} {batch:5d} {density:7.2f} | {cells} | {row['speedup']:5.2f}x"
                    f" | {onednn}"
                )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "layers": rows}, indent=1))


if __name__ == "__main__":
    main()
