"""A CPU stand-in for CUDA graph capture, so that tests can check what a captured update does.

Like a CUDA graph, an emulated graph fixes at capture every operation, every Python value they
took and every tensor they read or wrote, and a replay runs those operations again on the same
tensors (each operation's result is written back into the tensor it gave at capture, as a graph
writes into the same addresses). Capturing runs nothing: every tensor an operation wrote and the
random generator are put back afterwards. Reading a value back to the host during capture fails,
as it does on a GPU. So Python state read at capture and changed later (a step counter kept on
the host, a reassigned tensor) gives replays that differ from eager steps, which is what the
tests look for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

HOST_READS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.lift_fresh.default,  # a tensor from host data
}


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
        if func in HOST_READS:
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
            with _Recorder() as recorder:
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
