"""Atomic checkpoints: a crash mid-write never destroys the previous checkpoint."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

CHECKPOINT = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


def save_checkpoint(state: dict, run_dir: Path) -> None:
    """Write ``run_dir/checkpoint.pt`` via a temporary file and an atomic rename."""
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".pt.tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict:
    """Read ``run_dir/checkpoint.pt`` onto the CPU (random-generator states must stay there)."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist: the run never reached its first checkpoint; "
            "start it again without --resume (remove the directory first)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(
            f"{path} is corrupt or unreadable ({error}); it cannot be resumed"
        ) from error
