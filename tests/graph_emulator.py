"""A CPU stand-in for CUDA graph capture, so that tests can check what a captured update does.

Like a CUDA graph, an emulated graph fixes at capture every operation, every Python value they
took and every tensor they read or wrote, and a replay runs those operations again on the same
tensors (each operation's result is written back into the tensor it gave at capture, as a graph
writes into the same addresses). Capturing runs nothing: every tensor an operation wrote and the
random generator are put back afterwards. Reading a value back to the host during capture fails,
as it does on a GPU: a value or a copy to the host, and any operation whose output's size
depends on the data (``nonzero``, boolean indexing, ``unique``...), which needs the host to
learn that size. So Python state read at capture and changed later (a step counter kept on the
host, a reassigned tensor) gives replays that differ from eager steps, which is what the tests
look for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
HOST_READS = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.lift_fresh.default,  # a tensor from host data
    # outputs whose size depends on the data
    aten.nonzero.default,
    aten.argwhere.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
}
# calls that copy a tensor to the host: on the CPU they dispatch nothing (the tensor is there)
HOST_COPIES = {"tolist", "numpy", "cpu", "item"}


def _reads_host(func, args, kwargs) -> bool:
    """Whether a dispatched operation makes the host wait for the device's data."""
    if func in HOST_READS:
        return True
    if func is aten.repeat_interleave.Tensor:  # its output size is the repeats' sum
        return kwargs.get("output_size") is None
    if func is aten.index.Tensor:  # boolean indices select a data-dependent count
        return any(t is not None and t.dtype == torch.bool for t in args[1])
    return False


class _HostCopies(TorchFunctionMode):
    """Refuses copies to the host, which a CPU tensor makes without dispatching anything."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        # .to("cpu") by name (here every device is the CPU, so .to(agent.device) must pass)
        to_host = name == "to" and "cpu" in (*args[1:], kwargs.get("device"))
        if name in HOST_COPIES or to_host:
            raise RuntimeError(f"Tensor.{name} reads the device from the host during capture")
        return func(*args, **kwargs)


def _written(func, args, kwargs) -> list[torch.Tensor]:
    """The tensors an operation writes (in place, or ``out=``)."""
    values = dict(zip([a.name for a in func._schema.arguments], args, strict=False)) | kwargs
    written = []
    for argument in func._schema.arguments:
        if argument.alias_info is not None and argument.alias_info.is_write:
            written += [t for t in tree_flatten(values.get(argument.name))[0] if torch.is_tensor(t)]
    return written


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple] = []
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tensor, before its first write)
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _reads_host(func, args, kwargs):
            raise RuntimeError(f"{func} reads the device from the host during capture")
        for tensor in _written(func, args, kwargs):
            if id(tensor) not in self.seen:
                self.seen.add(id(tensor))
                self.saved.append((tensor, tensor.clone()))
        result = func(*args, **kwargs)
        outputs = [t for t in tree_flatten(result)[0] if torch.is_tensor(t)]
        self.ops.append((func, args, kwargs, outputs))
        return result


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors are the same elements of memory (a view op's replay)."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


class EmulatedCapture:
    """The ``dstrl.graphs.Capture`` of the emulated graphs; counts its replays."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.replays = 0

    def run(self, work: Callable[[], Any]) -> Any:
        return work()

    def capture(self, work: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        state = self.generator.get_state()
        try:
            with _HostCopies(), _Recorder() as recorder:
                result = work()
        except RuntimeError:  # surfaces, as on a GPU, as the capture's end failing in its turn
            raise RuntimeError("operation failed due to a previous error during capture")  # noqa: B904
        with torch.no_grad():
            for tensor, before in reversed(recorder.saved):
                tensor.copy_(before)
        self.generator.set_state(state)
        ops = recorder.ops

        def replay() -> None:
            self.replays += 1
            with torch.no_grad():
                for func, args, kwargs, outputs in ops:
                    result = func(*args, **kwargs)
                    fresh = [t for t in tree_flatten(result)[0] if torch.is_tensor(t)]
                    for kept, value in zip(outputs, fresh, strict=True):
                        if not _same_memory(kept, value):
                            kept.copy_(value)

        return replay, result
