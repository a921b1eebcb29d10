"""Run-directory logs: CSV files that survive a resume, plus optional TensorBoard events."""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dstrl.rundir import write_atomic


class CsvLog:
    """Append rows to a CSV file with a fixed header; on resume, drop rows past a step."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path, self.fields = path, fields
        if not path.exists():
            with naming(path), path.open("w", newline="") as f:
                csv.writer(f).writerow(fields)

    def _complete_rows(self) -> list[dict]:
        """The rows on disk, less a last one that a crash or a full disk cut short."""
        with self.path.open(newline="") as f:
            text = f.read()
        return list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1], newline="")))

    def steps(self) -> set[int]:
        """The steps its complete rows were logged at."""
        return {_step(row) for row in self._complete_rows()}

    def truncate_after(self, step: int) -> None:
        """Forget rows logged after ``step`` (they are redone by a resumed run), and a last row
        that a crash or a full disk cut short: it lacks its line break, and what is left of it
        may read as an earlier step ("2750" cut to "27"). Atomically, so a kill meanwhile loses
        nothing."""
        rows = [row for row in self._complete_rows() if _step(row) <= step]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self.fields)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, text.getvalue())

    def write(self, rows: list[dict]) -> None:
        """Append ``rows``, on disk when this returns: a checkpoint written after them must not
        outlive them in a crash."""
        with naming(self.path), self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerows(rows)
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError raised inside that names no file names ``path``: a failed write or fsync
    (a full disk) names none, nor does TensorBoard's writer."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def _step(row: dict) -> float:
    """A row's step; a row cut short by a crash mid-write counts as past every step."""
    try:
        return int(row["step"])
    except (TypeError, ValueError):
        return float("inf")


def _leave_writer_failures_to_the_writes() -> None:
    """TensorBoard's writer thread keeps a failed write (a full disk) for the training process's
    next write or flush to raise, then raises it itself too, which printed "Exception in thread"
    and a traceback before the run's one-line error. Other threads' failures are printed as
    before."""
    previous = threading.excepthook
    if getattr(previous, "leaves_writer_failures", False):
        return
    try:  # a private class: another TensorBoard may lack it, and print as before
        from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    except ImportError:
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.thread, _AsyncWriterThread):
            previous(args)

    hook.leaves_writer_failures = True
    threading.excepthook = hook


class TensorBoard:
    """Scalars to TensorBoard, or nothing when disabled. A write that fails is an OSError that
    names the directory."""

    def __init__(self, directory: Path | None, resumed_at: int = 0) -> None:
        """``resumed_at``: the step a resumed run continues from; events the stopped run logged
        after it are dropped (those of that step itself came before its checkpoint, and stay)."""
        self.directory, self.writer = directory, None
        if directory is not None:
            from torch.utils.tensorboard import SummaryWriter

            purge = resumed_at + 1 if resumed_at else None
            _leave_writer_failures_to_the_writes()
            with naming(self.directory):
                self.writer = SummaryWriter(str(directory), purge_step=purge)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            with naming(self.directory):
                for key, value in values.items():
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        """Write what is queued and close; a write that failed raises here, once (closing alone
        would drop it)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                with naming(self.directory):
                    writer.flush()
            finally:
                with suppress(OSError):  # the same failure again
                    writer.close()
