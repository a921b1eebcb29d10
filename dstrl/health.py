"""Divergence: which agents of a population have stopped producing finite numbers, and where.

An agent (member) whose loss, weights, actions or evaluation return stop being finite is halted:
the agent zeroes and freezes its networks (``ActorCritic.halt``), the loop gives its environment
the middle of the action range and logs no more of its evaluations, and every other member goes
on unchanged; members share no numbers, so one bad seed of 32 costs the other 31 nothing. When
every member has diverged the run stops, before any checkpoint, so the last good one stays.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np


def advice(family: str, learning_rate: float) -> str:
    """What to change after a divergence, in one sentence."""
    return (
        f"Lower --{family}.learning-rate (now {learning_rate:g}) or check the environment's "
        "rewards, and start again in a new --out"
    )


class DivergedError(RuntimeError):
    """Every agent of the run has diverged; the message says where and what to change."""


@dataclass(frozen=True)
class Divergence:
    member: int
    seed: int
    step: int
    reason: str
    method: str = ""  # in a population of several algorithms, the member's

    def describe(self) -> str:
        who = f"{self.method}, seed {self.seed}" if self.method else f"seed {self.seed}"
        return f"member {self.member} ({who}) at step {self.step:,}: {self.reason}"


class Health:
    """The population's divergence record: a halted flag per member and what halted it."""

    def __init__(self, seeds: list[int], advice: str, methods: list[str] | None = None) -> None:
        """``advice``: what a user should change when an agent diverges (one clause);
        ``methods``: each member's algorithm, where a population mixes several."""
        self.seeds, self.advice = seeds, advice
        self.methods = methods
        self.halted = np.zeros(len(seeds), dtype=bool)
        self.events: list[Divergence] = []

    @property
    def any(self) -> bool:
        return bool(self.halted.any())

    @property
    def all(self) -> bool:
        return bool(self.halted.all())

    def record(self, bad: np.ndarray, step: int, reason: str) -> np.ndarray:
        """Halt the members flagged in ``bad`` (E,) that are not halted yet; returns them."""
        new = np.asarray(bad, dtype=bool) & ~self.halted
        self.halted |= new
        for member in np.flatnonzero(new):
            method = self.methods[member] if self.methods else ""
            event = Divergence(int(member), self.seeds[member], step, reason, method)
            self.events.append(event)
            if not self.all:  # when every member has diverged, the run's error says it all
                print(
                    f"dstrl: {event.describe()}; this agent stops, the others go on",
                    file=sys.stderr,
                    flush=True,
                )
        return new

    def message(self, last_checkpoint: int | None) -> str:
        """One line for the user: who diverged, where, what was kept and what to change."""
        who = "; ".join(event.describe() for event in self.events)
        if self.all:
            kept = (
                f"the checkpoint of step {last_checkpoint:,} is kept"
                if last_checkpoint
                else "no checkpoint had been written"
            )
            return f"training diverged ({who}); {kept}. {self.advice}"
        live = len(self.seeds) - len(self.events)
        return (
            f"{len(self.events)} of {len(self.seeds)} agents diverged ({who}) and were halted; "
            f"the other {live} finished (summary.json lists the diverged). {self.advice}"
        )

    def state_dict(self) -> list[dict]:
        """The events as plain data (``method`` only where a population mixes algorithms)."""
        return [
            {key: value for key, value in asdict(event).items() if key != "method" or value}
            for event in self.events
        ]

    def load_state_dict(self, events: list[dict]) -> None:
        self.events = [Divergence(**event) for event in events]
        self.halted[:] = False
        self.halted[[event.member for event in self.events]] = True
