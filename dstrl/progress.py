"""How far a sweep's runs have come, and about how long the rest will take.

A run logs its step to ``train_metrics.csv`` every ``--log-every`` steps, so the sweep reads
progress from there (on a Ray cluster, from the storage every node sees) without asking the
runs. The time left is the rest of every run's steps at the rate one run has made so far (the
runs' steps gained over their running time), scheduled as the sweep schedules them: running runs
first, each on a slot of its own, then the others in order, each on the first of ``workers``
slots to come free. Steps are agent-steps: a packed population of six agents counts six for
each of its steps, and is expected to take six times as long as one agent's run.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from pathlib import Path

TAIL = 1 << 16  # bytes read from a metrics file's end: many rows of the widest population


def steps_done(run_dir: Path) -> int:
    """The step of the last row of ``run_dir/train_metrics.csv``; 0 before its first row."""
    try:
        with (run_dir / "train_metrics.csv").open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL))
            lines = f.read().split(b"\n")
    except OSError:
        return 0
    # the last piece is "" after a whole row, or a row still being written; a tail's first
    # line may be cut too
    for line in reversed(lines[1 if size > TAIL else 0 : -1]):
        step = line.split(b",", 1)[0]
        if step.isdigit():  # not the header
            return int(step)
    return 0


def finish_in(remaining: list[float], workers: int) -> float:
    """Seconds until the last of runs taking ``remaining`` seconds ends, each started in order on
    the first of ``workers`` slots to come free."""
    slots = [0.0] * max(1, workers)
    for seconds in remaining:
        heapq.heappush(slots, heapq.heappop(slots) + seconds)
    return max(slots)


def duration(seconds: float) -> str:
    """``2 h 05 min``, ``12 min``, ``40 s``."""
    if seconds < 59.5:  # what rounds to a minute is said in minutes
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    """The runs of a sweep as they start and end; ``line()`` says how far they have come."""

    def __init__(
        self,
        runs: list[Path],
        steps: int,
        workers: int,
        every: float = 0,
        agents: list[int] | None = None,
    ) -> None:
        self.runs, self.steps, self.workers, self.every = runs, steps, workers, every
        self.agents = dict(zip(runs, agents or [1] * len(runs), strict=True))  # each run's
        self.began = self.said = time.monotonic()
        # when, and the lowest step seen since: a resumed run first cuts its metrics back to
        # its checkpoint's step
        self.started: dict[Path, tuple[float, int]] = {}
        self.ended: dict[Path, tuple[float, bool]] = {}  # when, and whether it finished
        self.lock = threading.Lock()  # local runs start in the pool's threads

    def start(self, run: Path) -> None:
        with self.lock:
            self.started[run] = (time.monotonic(), min(steps_done(run), self.steps))

    def end(self, run: Path, finished: bool) -> None:
        with self.lock:
            self.ended[run] = (time.monotonic(), finished)

    def due(self) -> str | None:
        """``line()`` once every ``every`` seconds (never if 0), while some run is unfinished."""
        if not self.every or time.monotonic() < self.said + self.every:
            return None
        self.said = time.monotonic()
        return self.line() if len(self.ended) < len(self.runs) else None

    def line(self) -> str:
        """``progress: 41% of 3,000,000 steps, 1 h 10 min in, about 1 h 40 min left``."""
        now = time.monotonic()
        with self.lock:
            ended = dict(self.ended)
            done = {run: self._done(run, ended) for run in self.runs}
            for run, (when, step) in self.started.items():
                self.started[run] = (when, min(step, done[run]))
            started = dict(self.started)
        agents = self.agents
        gained = sum(agents[run] * (done[run] - step) for run, (_, step) in started.items())
        busy = sum(ended.get(run, (now,))[0] - when for run, (when, _) in started.items())
        total = self.steps * sum(agents.values())
        share = sum(agents[run] * done[run] for run in self.runs) / total
        said = f"progress: {share:.0%} of {total:,} steps, {duration(now - self.began)} in"
        if gained <= 0 or busy <= 0:
            return f"{said}, time left not known yet"
        rate = gained / busy  # agent-steps per second of one run
        waiting = [run for run in self.runs if run not in ended]  # running ones first:
        waiting.sort(key=lambda run: run not in started)  # a stable sort keeps the order
        running = len(started) - len(ended.keys() & started.keys())
        # a Ray cluster may run more at once than the driver has cores
        slots = max(self.workers, running)
        left = finish_in([agents[run] * (self.steps - done[run]) / rate for run in waiting], slots)
        return f"{said}, about {duration(left)} left"

    def _done(self, run: Path, ended: dict[Path, tuple[float, bool]]) -> int:
        if ended.get(run, (0, False))[1]:
            return self.steps
        return min(steps_done(run), self.steps)
