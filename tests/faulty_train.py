"""Run the dstrl command line, then die by SIGKILL at a chosen point: a fault injector.

    python tests/faulty_train.py seconds 2.5 train --out DIR ...  # 2.5 s after starting
    python tests/faulty_train.py bytes 40000 train --out DIR ...  # mid-write, after 40,000
                                                                  # bytes of temporary files

Temporary files are what every atomic write of a run goes through (checkpoint, config.json,
rewritten logs), so ``bytes`` kills inside those writes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DyingFile:
    """A file that kills the process once ``budget[0]`` more bytes would be written."""

    def __init__(self, file, budget: list[int]) -> None:
        self.file, self.budget = file, budget

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) >= self.budget[0]:
            self.file.write(data[: self.budget[0]])
            self.file.flush()
            die()
        self.budget[0] -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.file.__exit__(*exc)


def main() -> None:
    mode, amount, *args = sys.argv[1:]
    if mode == "seconds":
        timer = threading.Timer(float(amount), die)
        timer.daemon = True
        timer.start()
    else:
        budget = [int(amount)]
        original = Path.open

        def open_dying(self, mode="r", *rest, **options):
            file = original(self, mode, *rest, **options)
            return DyingFile(file, budget) if self.name.endswith(".tmp") else file

        Path.open = open_dying
    from dstrl.cli import main as cli

    sys.exit(cli(args))


if __name__ == "__main__":
    main()
