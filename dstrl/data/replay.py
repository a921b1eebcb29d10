"""A replay buffer with one independent slice per member.

Each transition is stored as one packed row ``[obs, action, reward, next_obs, terminated]`` so
that adding and sampling are a single copy and a single gather for the whole population.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class ReplayBuffer:
    """Uniform replay, (members, capacity, row) on the training device."""

    def __init__(
        self, members: int, capacity: int, obs_dim: int, act_dim: int, device: torch.device
    ) -> None:
        self.members, self.capacity = members, capacity
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.width = 2 * obs_dim + act_dim + 2
        self.rows = torch.zeros(members, capacity, self.width, device=device)
        self.position = 0
        self.size = 0
        self._member_index = torch.arange(members, device=device).unsqueeze(1)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
    ) -> None:
        """Store one transition per member (arrays with a leading member axis)."""
        row = np.concatenate(
            [obs, action, reward[:, None], next_obs, terminated[:, None]], axis=1, dtype=np.float32
        )
        self.rows[:, self.position] = torch.from_numpy(row).to(self.rows.device, non_blocking=True)
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        """(obs, action, reward, next_obs, terminated), each (members, batch, ·), own draws."""
        index = torch.randint(
            0, self.size, (self.members, batch), generator=generator, device=generator.device
        )
        rows = self.rows[self._member_index, index.to(self.rows.device)]
        o, a = self.obs_dim, self.act_dim
        return (
            rows[..., :o],
            rows[..., o : o + a],
            rows[..., o + a],
            rows[..., o + a + 1 : 2 * o + a + 1],
            rows[..., -1],
        )

    def state_dict(self) -> dict:
        return {
            "rows": self.rows[:, : self.size].cpu().clone(),
            "position": self.position,
            "size": self.size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved buffer; into a larger one (an extended run), oldest row first."""
        rows, size, position = state["rows"], state["size"], state["position"]
        if rows.shape[0] != self.members or rows.shape[2] != self.width:
            raise ValueError("replay buffer in the checkpoint does not match this run's shapes")
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, capacity is {self.capacity}")
        if self.capacity > size and position != size:  # a wrapped buffer, now with more room
            rows, position = torch.cat([rows[:, position:], rows[:, :position]], dim=1), size
        self.rows[:, :size] = rows.to(self.rows.device)
        self.position, self.size = position % self.capacity, size
