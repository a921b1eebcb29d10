"""When the topology changes and how much of it: period, drop fraction, decay, stop step."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dstrl.sparse.kinds import Decay, check_choice


@dataclass(frozen=True)
class TopologySchedule:
    """Prune-and-grow every ``update_period`` steps, until ``stop_step`` (exclusive).

    ``drop_fraction`` is constant, or decays to zero at ``stop_step`` along a half cosine.
    """

    update_period: int = 1000
    drop_fraction: float = 0.05
    decay: Decay = "constant"
    stop_step: int | None = None

    def __post_init__(self) -> None:
        check_choice("decay", self.decay, Decay)
        if self.update_period < 1:
            raise ValueError(f"update period must be at least 1, got {self.update_period}")
        if not 0 < self.drop_fraction < 1:
            raise ValueError(f"drop fraction must be in (0, 1), got {self.drop_fraction}")
        if self.decay == "cosine" and self.stop_step is None:
            raise ValueError("cosine decay needs a stop step")

    def is_update_step(self, step: int) -> bool:
        """True when the topology should change after gradient step ``step`` (1-based)."""
        if step <= 0 or step % self.update_period:
            return False
        return self.stop_step is None or step < self.stop_step

    def drop_fraction_at(self, step: int) -> float:
        """Fraction of each layer's active connections to replace at ``step``."""
        if self.decay == "constant":
            return self.drop_fraction
        assert self.stop_step is not None
        return self.drop_fraction * 0.5 * (1 + math.cos(math.pi * min(step / self.stop_step, 1)))
