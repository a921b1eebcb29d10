"""The run directory on disk: atomic writes, one writer at a time, and failures told plainly.

A run lasts hours on shared machines, so every file it replaces (checkpoint, config, summary,
rewritten logs) goes through a temporary file, fsync and an atomic rename: a crash, a kill or a
full disk mid-write leaves the previous version intact and no temporary file behind. A lock
(``flock`` on ``.lock``) keeps a second process from training into the same directory; the
kernel drops it when its holder dies, so a killed run never leaves it stuck. Processes forked
while it is held (environment workers) close their copy, which would otherwise hold it on.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from dstrl.errors import CheckpointError

LOCK = ".lock"
CHECKPOINT = "checkpoint.pt"
CHECKPOINTED = ".checkpointed"
"""Written once the first checkpoint is: a run directory without its checkpoint but with this
had one, which was removed (not copied back from a cluster, say), and must not be cleared."""


class RunDirError(RuntimeError):
    """The run directory cannot be created, locked or written; the message says where and why."""


def describe(error: OSError) -> str:
    """``runs/x/checkpoint.pt: No space left on device`` from an OSError."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def write_atomic(path: Path, write: Callable[[BinaryIO], None] | bytes | str) -> None:
    """Replace ``path`` with what ``write`` writes (or the given bytes/text), all or nothing.

    On any failure the old file is untouched, the temporary file is removed, and an OSError
    becomes a RunDirError that names the file: also one that a writer turned into another error
    (torch's zip writer reports a full disk as a RuntimeError raised while handling it).
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)  # the rename itself survives a power cut
    except BaseException as error:
        with suppress(OSError):  # nothing to remove where nothing could be created
            tmp.unlink()
        cause = _os_error(error)
        if cause is not None:
            raise RunDirError(f"cannot write {path}: {cause.strerror or cause}") from error
        raise


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind ``error``: itself, or one it was raised from or while handling."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents), or say in one line why it cannot be."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {run_dir} is a file, not a directory; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except NotADirectoryError as error:
        blocking = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
        where = f"{blocking} is a file" if blocking else describe(error)
        raise RunDirError(f"--out {run_dir} cannot be created: {where}") from error
    except OSError as error:
        raise RunDirError(f"--out {run_dir} cannot be created: {describe(error)}") from error


_held: set[int] = set()  # descriptors of the locks this process holds


def _forget_held_locks() -> None:
    """In a forked child: close the inherited lock descriptors (the parent keeps its locks)."""
    for fd in _held:
        with suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_held_locks)


def busy(run_dir: Path, pid: str) -> str:
    """What to tell a command that wants a run directory another process is training in."""
    return (
        f"another dstrl process (pid {pid}) is training in {run_dir}; wait for it to end, or "
        "choose another --out"
    )


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's writer lock for the duration, or refuse at once if another
    process holds it."""
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunDirError(f"cannot lock {run_dir}: {describe(error)}") from error
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"cannot lock {run_dir}: {describe(error)}") from error
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(busy(run_dir, holder)) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:  # a full disk: its pid cannot be told to whom it refuses
            error.filename = error.filename or str(path)
            raise RunDirError(f"cannot write {describe(error)}") from error
        _held.add(fd)
        yield
    finally:
        _held.discard(fd)
        os.close(fd)  # closing the descriptor releases the lock


def training_now(run_dir: Path) -> str | None:
    """The pid of another process that holds ``run_dir``'s writer lock (training in it now),
    or None. The probe takes a shared lock for an instant; a run starting in that instant is
    refused as if another process were training, and can be started again."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        return None if holder == str(os.getpid()) else holder
    finally:
        os.close(fd)
    return None


def remove_temporaries(run_dir: Path) -> None:
    """Delete the temporary files of writes that a killed process never finished."""
    for path in run_dir.glob("*.tmp"):
        path.unlink(missing_ok=True)


def holds_run_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything besides the writer lock."""
    return run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir())


# What an attempt killed before its first checkpoint can leave in its run directory.
UNFINISHED_RUN_FILES = {"config.json", "evaluations.csv", "train_metrics.csv", "tensorboard", LOCK}


def refuse_foreign_files(run_dir: Path) -> None:
    """RunDirError if ``run_dir`` holds anything besides what a run killed before its first
    checkpoint leaves (a directory of other files is no run to start afresh)."""
    foreign = [
        p.name
        for p in sorted(run_dir.iterdir())
        if p.name not in {*UNFINISHED_RUN_FILES, CHECKPOINTED} and not p.name.endswith(".tmp")
    ]
    events = run_dir / "tensorboard"
    if events.is_dir():  # clearing removes it whole: it must hold TensorBoard's files alone
        foreign += [
            f"tensorboard/{p.name}"
            for p in sorted(events.iterdir())
            if not (p.is_file() and p.name.startswith("events.out.tfevents."))
        ]
    if foreign:
        raise RunDirError(
            f"{run_dir} holds files that are not an unfinished dstrl run ({', '.join(foreign)}) "
            "and no checkpoint.pt; choose another --out"
        )


def removed_checkpoint(run_dir: Path) -> str | None:
    """Why ``run_dir``'s missing checkpoint was removed rather than never written, or None."""
    if not (run_dir / CHECKPOINTED).exists():
        return None
    return (
        f"{run_dir}/{CHECKPOINT} was written and has been removed since: put it back to "
        f"continue the run, or delete {run_dir} to train it afresh"
    )


def clear_unfinished_run(run_dir: Path) -> None:
    """Remove what a run killed before its first checkpoint left, so that it can start again;
    refuse a directory that holds anything else, or whose checkpoint was removed."""
    removed = removed_checkpoint(run_dir)
    if removed is not None:
        raise CheckpointError(removed)
    refuse_foreign_files(run_dir)
    left = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK)
    if left:  # said: logs of many steps may go
        print(
            f"dstrl: note: {run_dir} has no checkpoint: clearing what its last attempt left "
            f"({', '.join(left)}) and starting afresh",
            file=sys.stderr,
            flush=True,
        )
    for path in list(run_dir.iterdir()):
        if path.name == LOCK:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
