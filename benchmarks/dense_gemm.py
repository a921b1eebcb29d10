"""What the dense baseline would gain from oneDNN's products: updates timed with MKL's and oneDNN's.

dstrl's dense and masked-dense layers multiply with ``torch.bmm``/``torch.baddbmm``, which run
MKL's sgemm on the CPU. On an AMD EPYC with AVX-512 (Zen 5) MKL ran at the rate of AVX2 code
(about 107 GFLOP/s on one thread), and oneDNN (in the same torch build, reachable as
``torch.ops.mkldnn._linear_pointwise``) computed the same products in about half the time.
This script patches oneDNN in for the products of 256-wide layers (forward with its ReLU, input
and weight gradients, member by member; smaller products stay as dstrl computes them), times one
agent's update both ways in one process, interleaved, and prints each agent's ratios to td3
under either. The numbers differ by float32 rounding.
dstrl itself does not use oneDNN; this measures the question:

    python benchmarks/dense_gemm.py
    python benchmarks/dense_gemm.py --densities λ 0.1 --rounds 10
    python benchmarks/dense_gemm.py --end-to-end 3     # also learning-phase steps/s, as
                                                       # benchmarks/throughput.py measures them
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import numpy as np
import throughput
import torch
import update

from dstrl import nets

WIDE = 64
"""Products whose every dimension is at least this go to oneDNN (its calls cost more than MKL's
on small products)."""


def _linear(a, b_t, bias=None, relu: bool = False):
    """a (E, m, k) · b_t (E, n, k)ᵀ (+ bias (E, n)), member by member, by oneDNN."""
    linear = torch.ops.mkldnn._linear_pointwise
    attr = "relu" if relu else "none"
    out = torch.empty(a.shape[0], a.shape[1], b_t.shape[1])
    for e in range(a.shape[0]):
        out[e] = linear(a[e], b_t[e], None if bias is None else bias[e], attr, [], "")
    return out


def _wide(a, b) -> bool:
    return min(a.shape[-2], a.shape[-1], b.shape[-1]) >= WIDE


@contextmanager
def onednn():
    """Within: nets' batch-major products of wide layers by oneDNN."""
    product, forward = nets.product, nets._forward

    def onednn_product(a, b):
        return _linear(a, b.mT) if _wide(a, b) else product(a, b)

    def onednn_forward(x, weights, biases, tanh):
        inputs, last = [x], len(weights) - 1
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            if _wide(x, w.mT):
                x = _linear(x, w, b, relu=i < last)
            else:
                x = torch.baddbmm(b.unsqueeze(1), x, w.mT)
                x = torch.relu_(x) if i < last else x
            if i < last:
                inputs.append(x)
        return (torch.tanh_(x) if tanh else x), inputs

    nets.product, nets._forward = onednn_product, onednn_forward
    try:
        yield
    finally:
        nets.product, nets._forward = product, forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--densities", nargs="+", default=["λ", "0.1"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--updates", type=int, default=500, help="updates per round")
    parser.add_argument("--warmup", type=int, default=1_200)
    parser.add_argument(
        "--end-to-end",
        type=int,
        default=0,
        metavar="REPEATS",
        help="also train HalfCheetah-v5 (throughput.py's protocol, batch 100) this many times",
    )
    args = parser.parse_args()
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        raise SystemExit("this torch build has no oneDNN linear: nothing to compare")
    torch.set_num_threads(1)
    batches = update.synthetic_batches(seed=1)
    agents = {
        (name, gemm): agent
        for gemm in ("mkl", "onednn")
        for name, agent in update.agents(args.densities).items()
    }
    names = list(dict.fromkeys(name for name, _ in agents))

    def run(key: tuple[str, str], updates: int) -> None:
        with onednn() if key[1] == "onednn" else nullcontext():
            for i in range(updates):
                agents[key].update(*batches[i % 16])

    for key in agents:
        run(key, args.warmup)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for key in agents:
            started = time.perf_counter()
            run(key, args.updates)
            times[key].append((time.perf_counter() - started) / args.updates * 1e6)

    print(f"update of one agent, µs (median of {args.rounds} interleaved rounds), batch 100")
    print(f"{'agent':<14} {'MKL':>7} {'oneDNN':>7}  oneDNN/MKL  td3/agent: MKL  oneDNN")
    for name in names:
        mkl, dnn = np.array(times[(name, "mkl")]), np.array(times[(name, "onednn")])
        vs_mkl = np.median(np.array(times[("td3", "mkl")]) / mkl)
        vs_dnn = np.median(np.array(times[("td3", "onednn")]) / dnn)
        print(
            f"{name:<14} {np.median(mkl):7.0f} {np.median(dnn):7.0f}  {np.median(dnn / mkl):10.3f}"
            f"  {vs_mkl:14.3f} {vs_dnn:7.3f}"
        )
    if args.end_to_end:
        end_to_end(args.densities, args.end_to_end)


def end_to_end(densities: list[str], repeats: int, steps: int = 2_000) -> None:
    """Learning-phase steps/s of td3 and each sparse contender under both products,
    interleaved, and each contender's ratio to td3 (median of the per-repetition ratios)."""
    names = ["td3", *("ds-td3" if d == "λ" else f"ds-td3@{d}" for d in densities)]
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(repeats):
        for gemm in ("mkl", "onednn"):
            for name in names:
                with onednn() if gemm == "onednn" else nullcontext():
                    rate = throughput.dstrl_steps_per_second(name, 100, steps)
                rates[(name, gemm)].append(rate)
                print(f"{gemm:<6} {name:<12} {rate:6.1f} steps/s", flush=True)
    print(f"learning-phase steps/s (median of {repeats}), and over td3's in the same repetition")
    for gemm in ("mkl", "onednn"):
        dense = np.array(rates[("td3", gemm)])
        ratios = ", ".join(
            f"{name}/td3 {np.median(np.array(rates[(name, gemm)]) / dense):.3f}"
            for name in names[1:]
        )
        print(f"  {gemm:<6} td3 {np.median(dense):5.0f}   {ratios}")


if __name__ == "__main__":
    main()
