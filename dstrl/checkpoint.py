"""Checkpoints as plain data, written atomically and read without running code.

A checkpoint holds tensors, numbers, strings, lists, tuples and dicts only, so it loads with
``torch.load(weights_only=True)``: opening a run directory from someone else can never execute
code. One that carries any object outside torch's weights-only allowlist is refused.
Checkpoints of dstrl before 2026-11 stored NumPy arrays as pickled objects; those (and only
those) load through an allowlist of NumPy's array constructors and are converted to tensors,
so old runs still resume.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from dstrl.errors import CheckpointError
from dstrl.rundir import (
    CHECKPOINT,
    CHECKPOINTED,
    removed_checkpoint,
    training_now,
    write_atomic,
)

PLAIN = (bool, int, float, str, type(None))  # besides tensors


def _legacy_globals() -> dict[str, object]:
    """The globals that old checkpoints used for NumPy arrays and scalars, by pickled name."""
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    names: dict[str, object] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names[f"{module}._reconstruct"] = multiarray._reconstruct
        names[f"{module}.scalar"] = multiarray.scalar
    for name in dir(dtypes) if dtypes else []:
        if name.endswith("DType"):
            names[f"numpy.dtypes.{name}"] = getattr(dtypes, name)
    return names


def check_plain(value, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first entry of ``value`` that is not plain data."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where} has a key of type {type(key).__name__}")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif not (isinstance(value, torch.Tensor) or type(value) in PLAIN):
        # exactly these types: a subclass (an IntEnum) would be pickled, then refused at load
        raise TypeError(f"{where} is a {type(value).__name__}, not plain data")


def save_checkpoint(state: dict, run_dir: Path) -> None:
    """Write ``run_dir/checkpoint.pt`` atomically (see ``dstrl.rundir.write_atomic``)."""
    check_plain(state)
    write_atomic(run_dir / CHECKPOINT, lambda f: torch.save(state, f))
    if not (run_dir / CHECKPOINTED).exists():
        write_atomic(run_dir / CHECKPOINTED, "")


MISFITS = (RuntimeError, ValueError, KeyError, TypeError, IndexError)
"""What loading a checkpoint into agents built from another configuration raises."""


def misfit(run_dir: Path, error: Exception) -> CheckpointError:
    """The one-line error of a checkpoint that does not fit its run's config.json (an edited
    config.json, a checkpoint copied from another run, a run of an older dstrl)."""
    detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    detail = detail if len(detail) <= 300 else detail[:300] + " …"
    return CheckpointError(f"{run_dir}/checkpoint.pt does not fit the run's config.json ({detail})")


def load_checkpoint(run_dir: Path) -> dict:
    """Read ``run_dir/checkpoint.pt`` onto the CPU (random-generator states must stay there),
    its tensors mapped from the file, not read into memory: a resumed run copies them into its
    own, and evaluating or exporting reads the agents' few MB, not the whole replay buffer.
    Drop the result once used: its mapping keeps the file's disk space after a newer
    checkpoint replaces it."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        if (run_dir / "summary.json").exists():  # finished, and its checkpoint deleted since
            raise CheckpointError(
                f"{path} does not exist, but the run finished (summary.json): its results stay "
                "readable; it cannot be resumed or extended, nor its agents evaluated or exported"
            )
        pid = training_now(run_dir)
        if pid is not None:
            raise CheckpointError(
                f"{path} does not exist yet: the run is training (pid {pid}) and has not "
                "reached its first checkpoint; wait for it"
            )
        removed = removed_checkpoint(run_dir)
        if removed is not None:
            raise CheckpointError(removed)
        raise CheckpointError(
            f"{path} does not exist: the run never reached its first checkpoint (start it "
            "afresh with --auto-resume)"
        )
    try:
        _check_records(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        return _load_legacy(path)
    except (RuntimeError, ValueError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise _corrupt(path, error) from error


def _check_records(path: Path) -> None:
    """ValueError naming the first record of the checkpoint whose bytes no longer match their
    CRC-32: torch would load a flipped bit in a tensor without a word."""
    if path.stat().st_size == 0:
        raise ValueError("an empty file")
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ValueError(f"its record {damaged} fails its checksum: the file was damaged")


def _corrupt(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is corrupt or unreadable ({error}); dstrl cannot use it: put back a copy, or "
        f"delete {path.parent} to train the run afresh"
    )


def _load_legacy(path: Path) -> dict:
    """An old checkpoint with NumPy arrays: load those through the allowlist, as tensors."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, ValueError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise _corrupt(path, error) from error
    allowed = _legacy_globals()
    harmless = {"gymnasium.envs.registration.EnvSpec"}  # a dataclass; dropped on conversion
    unsafe = sorted(set(names) - set(allowed) - harmless)
    if unsafe:
        raise CheckpointError(
            f"{path} holds Python objects ({', '.join(unsafe)}) and dstrl will not load it: "
            "a dstrl checkpoint is tensors, numbers and strings only, so this file was made or "
            "changed elsewhere; do not use it"
        )
    from gymnasium.envs.registration import EnvSpec

    # dtype objects are rebuilt through their class, which the pickle does not name
    dtypes = [obj for name, obj in allowed.items() if name.startswith("numpy.dtypes.")]
    globals_ = [(obj, name) for name, obj in allowed.items() if name in names]
    globals_ += [*dtypes, EnvSpec]
    try:
        with torch.serialization.safe_globals(globals_):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
    ) as error:
        raise _corrupt(path, error) from error
    return to_plain(state)


def to_plain(value):
    """NumPy arrays as tensors and NumPy scalars as 0-d tensors, other objects dropped from
    dicts (the non-state attributes old checkpoints kept for classic-control environments)."""
    if isinstance(value, np.ndarray | np.generic):
        numeric = value.dtype.kind in "biuf"
        return torch.from_numpy(np.array(value)) if numeric else _DROP
    if isinstance(value, dict):
        converted = {k: to_plain(v) for k, v in value.items()}
        return {k: v for k, v in converted.items() if v is not _DROP}
    if isinstance(value, list | tuple):
        return type(value)(v for v in map(to_plain, value) if v is not _DROP)
    return value if isinstance(value, (torch.Tensor, *PLAIN)) else _DROP


_DROP = object()
