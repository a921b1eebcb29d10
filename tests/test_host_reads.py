"""An update reads nothing back from the device, except in its periodic restructuring (topology
updates, ReDo): what a CUDA graph needs, and what lets ``--overlap`` step the environments while
a GPU works. Checked on the CPU by watching every torch call that would make the host wait for
a GPU, with the sparse targets pruned as off the CPU (``prune_to_count_tensor``)."""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

import dstrl.sparse.target as sparse_target
from dstrl.train import Trainer
from tests.helpers import UPDATE_KINDS, assert_same, learning_trainer

# calls whose result the host must wait for on a GPU (a copy, a value, or an output whose size
# depends on the data)
HOST_READS = {
    "item",
    "tolist",
    "numpy",
    "cpu",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
}


def _reads_host(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether a torch call makes the host wait for the device: by its name, or by its
    arguments (a copy to the host, boolean indexing, a size read from the data)."""
    if name in HOST_READS:
        return True
    if name == "to":
        return "cpu" in (*args[1:], kwargs.get("device"))
    if name == "__getitem__":
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(torch.is_tensor(i) and i.dtype == torch.bool for i in index)
    if name == "where":  # the one-argument form is nonzero's
        return len(args) + len(kwargs) == 1
    if name == "repeat_interleave":
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return torch.is_tensor(repeats) and kwargs.get("output_size") is None
    return False


# the loop's periodic stages, eager by design (each runs at a period, or after a change)
PERIODIC = ("restructure", "_costs", "_adapt_buffer")


class HostReads(TorchFunctionMode):
    """Records where host reads happen, outside the periodic stages."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if _reads_host(name, args, kwargs):
            stack = traceback.extract_stack()[:-1]
            if not any(frame.name in PERIODIC for frame in stack):
                where = [f for f in stack if "/dstrl/" in f.filename][-1]
                self.found.append(f"{name} at {where.filename}:{where.lineno} ({where.line})")
        return func(*args, **kwargs)


@pytest.mark.parametrize(("algo", "settings"), UPDATE_KINDS)
def test_learning_reads_nothing_back_between_restructurings(
    tmp_path, as_off_the_cpu, algo, settings
):
    trainer = learning_trainer(tmp_path / "run", algo, sparse_kernels="masked", **settings)
    spy = HostReads()
    changes = 0
    for _ in range(160):  # three topology updates at period 50
        trainer._step_envs(*trainer._begin_step())
        with spy:
            trainer._learn(trainer.step)
        changes += trainer.agent.last_topology_change is not None
    assert spy.found == []
    if trainer.agent.sparsity is not None and algo != "static-td3":
        assert changes >= 3  # the exempt stages did run


def test_tensor_pruning_trains_the_same_agents_as_the_compiled_kernel(tmp_path, monkeypatch):
    """DS-TD3 with magnitude-pruned targets: the agents of a run whose targets are pruned by the
    tensor version (as on a GPU) equal, bit for bit, those pruned by the CPU kernel."""
    states = []
    for tensor in (False, True):
        if tensor:
            monkeypatch.setattr(sparse_target, "compiled", lambda target, outside: False)
        trainer = learning_trainer(tmp_path / str(tensor), "ds-td3")
        assert all(t.compiled != tensor for t in trainer.agent.sparse_targets)
        bounded = 0  # updates whose tensor pruning merged challengers
        for _ in range(160):
            trainer._step_envs(*trainer._begin_step())
            trainer._learn(trainer.step)
            bounded += any(max(t._most) for t in trainer.agent.sparse_targets)
        assert not tensor or bounded > 50
        states.append(trainer.agent.state_dict())
    assert_same(*states)


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("algo", ["td3", "ds-td3", "ds-sac"])
def test_on_a_gpu_learning_never_waits_for_the_device(tmp_path, monkeypatch, algo):
    """CUDA's own check: any synchronisation outside the periodic stages is an error."""
    trainer = learning_trainer(tmp_path / "run", algo, device="cuda")
    for owner, name in [(type(trainer.agent), "restructure"), *[(Trainer, n) for n in PERIODIC]]:
        if hasattr(owner, name):
            monkeypatch.setattr(owner, name, _may_wait(getattr(owner, name)))
    for _ in range(160):
        trainer._step_envs(*trainer._begin_step())
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer._learn(trainer.step)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _may_wait(stage):
    def eager(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("default")
        try:
            return stage(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    return eager


@pytest.mark.gpu
@GPU
def test_on_a_gpu_tensor_pruning_equals_the_cpu_kernel():
    g = torch.Generator().manual_seed(5)
    shape = (8, 256, 256)
    support = torch.rand(shape, generator=g) < 0.5
    target = torch.randn(shape, generator=g) * support
    entered = (torch.rand(shape, generator=g) < 0.03) & ~support
    target += entered * torch.randn(shape, generator=g) * 0.3
    on_gpu, outside_gpu = target.cuda(), (~support).cuda()
    sparse_target.prune_to_count([target], [~support])
    most = int(entered.flatten(1).sum(dim=1).max())
    sparse_target.prune_to_count_tensor(on_gpu, outside_gpu, most)
    assert torch.equal(on_gpu.cpu(), target)


class _Reads(TorchFunctionMode):
    """Counts the calls ``_reads_host`` flags."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.count += _reads_host(getattr(func, "__name__", ""), args, kwargs)
        return func(*args, **kwargs)


def test_the_watch_tells_host_reads_by_their_arguments():
    w, counts, rows = torch.randn(4), torch.tensor([1, 0, 2, 1]), torch.tensor([0, 2])
    reads = [
        lambda: w[w > 0],
        lambda: w[None, w > 0],
        lambda: w.to("cpu"),
        lambda: torch.where(w > 0),
        lambda: w.repeat_interleave(counts),
        lambda: w.nonzero(),
    ]
    fine = [
        lambda: w[1],
        lambda: w[rows],
        lambda: torch.where(w > 0, w, 0.0),
        lambda: w.repeat_interleave(counts, output_size=4),
        lambda: w.to(torch.float64),
    ]
    for calls, expected in ((reads, 1), (fine, 0)):
        for call in calls:
            with _Reads() as watch:
                call()
            assert watch.count == expected
