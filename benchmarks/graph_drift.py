"""How far two runs drift apart in 300 updates when one starts a few float32 ulps away: why the GPU
graph test (tests/test_graphs.py) compares each update in lockstep instead of two whole runs.

The tiny runs of the test suite (Pendulum-v1, 32x32, two seeds, topology updates every 50), the
same 300 updates as the GPU test, once as they start and once with every actor and critic weight
multiplied by 1 + eps * N(0, 1); then the whole-run comparison the old test made (masks equal,
floats within rtol 1e-4 and atol 1e-5). A count, not a timing: the same on every machine.

    python benchmarks/graph_drift.py
    python benchmarks/graph_drift.py --eps 1e-7 1e-6 --updates 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's tiny runs

from tests.helpers import assert_same, learning_trainer  # noqa: E402
from tests.test_graphs import _train  # noqa: E402

KINDS = [("td3", {}), ("ds-td3", {}), ("ds-td3", {"grow": "gradient"}), ("ds-sac", {})]


def trained(algo, settings: dict, eps: float, updates: int) -> dict:
    """The agents' state after ``updates`` updates, their weights perturbed by ``eps`` first."""
    trainer = learning_trainer(Path(tempfile.mkdtemp()) / "run", algo, **settings)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in (trainer.agent.actor, trainer.agent.critic):
            for weight in net.parameters():
                weight.mul_(1 + eps * torch.randn(weight.shape, generator=noise))
    _train(trainer, updates)
    return trainer.agent.state_dict()


def masks_equal(a: dict, b: dict) -> bool:
    try:
        for name in ("actor_masks", "critic_masks"):
            if name in a:
                assert_same(a[name], b[name])
    except AssertionError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-7, 1e-6])
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for algo, settings in KINDS:
        start = trained(algo, settings, 0.0, args.updates)
        for eps in args.eps:
            moved = trained(algo, settings, eps, args.updates)
            outside = sum(
                not torch.allclose(moved[name][key], value, rtol=1e-4, atol=1e-5)
                for name in ("actor", "critic", "critic_target")
                for key, value in start[name].items()
            )
            print(
                f"{algo:7s} {settings}  eps {eps:g}: tensors outside the tolerance {outside}, "
                f"masks equal {masks_equal(start, moved)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
