"""The backward products of an input layer on the CPU: ``torch.bmm`` against ``nets.product``.

A network's input layer maps a few features (HalfCheetah-v5: 17 observations, 23 with the
action) to 256 units, so its weight gradient (256 x 23) and its input gradient (batch x 23) are
products with few columns. ``nets.product`` computes those transposed; this times both forms
in one process (one thread, median of rounds) and says whether they give the same bits:

    python benchmarks/products.py
    python benchmarks/products.py --batch-sizes 100 256 --features 11 17 23 --rounds 9
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dstrl.nets import product

UNITS = 256


def timed(f, calls: int = 200) -> float:
    """µs per call, the best of three passes of ``calls``."""
    f()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            f()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 256])
    parser.add_argument("--features", type=int, nargs="+", default=[17, 23])
    parser.add_argument("--members", type=int, default=2, help="stacked networks (twin critics)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = torch.Generator().manual_seed(0)
    print(f"{args.members} members, {UNITS} units, one thread: µs per product (median of rounds)")
    print("batch features product             bmm   product  ratio  same bits")
    for batch in args.batch_sizes:
        for features in args.features:
            x = torch.randn(args.members, batch, features, generator=data)
            d = torch.randn(args.members, batch, UNITS, generator=data)
            w = torch.randn(args.members, UNITS, features, generator=data)
            for name, (a, b) in {
                "weight gradient": (d.mT, x),
                "input gradient": (d, w),
            }.items():
                plain = [timed(lambda a=a, b=b: torch.bmm(a, b)) for _ in range(args.rounds)]
                ours = [timed(lambda a=a, b=b: product(a, b)) for _ in range(args.rounds)]
                same = torch.equal(torch.bmm(a, b), product(a, b))
                print(
                    f"{batch:5} {features:8} {name:<16} {np.median(plain):7.1f} "
                    f"{np.median(ours):8.1f} {np.median(plain) / np.median(ours):6.2f}x  {same}"
                )


if __name__ == "__main__":
    main()
