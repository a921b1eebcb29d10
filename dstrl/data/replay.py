"""A replay buffer with one independent slice per member, multi-step targets and RLx2's
dynamic size.

Each transition is stored as one packed row ``[obs, action, reward, next_obs, terminated]`` so
that adding and sampling are a single copy and a single gather for the whole population. Beside
the rows: whether the transition ended its episode (termination or truncation; an n-step window
stops there) and, for the dynamic buffer, the noise-free action the policy proposed (μ).

Members write in lockstep to one position, but each member may have dropped its oldest
transitions (``drop_oldest``), so each holds the newest ``sizes[e]`` rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class Batch(NamedTuple):
    """A sampled batch, every tensor (members, batch, ·). The TD target of a transition is
    ``reward + discount · (1 − terminated) · Q′(next_obs, ·)``: for n-step samples ``reward`` is
    the discounted sum of up to n rewards, ``next_obs`` the state after the last of them and
    ``discount`` γ to the power of their number; one-step samples have ``discount = γ``."""

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor
    discount: Tensor | float


class ReplayBuffer:
    """Uniform replay, (members, capacity, row) on the training device."""

    def __init__(
        self,
        members: int,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device,
        policy_actions: bool = False,
    ) -> None:
        """``policy_actions``: also keep the noise-free action of every transition (μ), which
        the dynamic buffer compares with the current policy."""
        self.members, self.capacity = members, capacity
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.width = 2 * obs_dim + act_dim + 2
        self.rows = torch.zeros(members, capacity, self.width, device=device)
        self.ends = torch.zeros(members, capacity, dtype=torch.bool, device=device)
        self.policy_actions = None
        if policy_actions:
            self.policy_actions = torch.zeros(members, capacity, act_dim, device=device)
        self.position = 0
        self.size = 0  # rows written, at most the capacity
        self.sizes = np.zeros(members, dtype=np.int64)  # rows each member still holds
        self._member_index = torch.arange(members, device=device).unsqueeze(1)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        ended: np.ndarray | None = None,
        policy_action: np.ndarray | None = None,
    ) -> None:
        """Store one transition per member (arrays with a leading member axis); ``ended``: the
        episode ended here (terminated or truncated; default: ``terminated``)."""
        row = np.concatenate(
            [obs, action, reward[:, None], next_obs, terminated[:, None]], axis=1, dtype=np.float32
        )
        device = self.rows.device
        self.rows[:, self.position] = torch.from_numpy(row).to(device, non_blocking=True)
        ended = terminated if ended is None else ended
        self.ends[:, self.position] = torch.from_numpy(np.asarray(ended, dtype=bool)).to(device)
        if self.policy_actions is not None:
            mu = action if policy_action is None else policy_action
            self.policy_actions[:, self.position] = torch.as_tensor(mu, dtype=torch.float32).to(
                device
            )
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.sizes = np.minimum(self.sizes + 1, self.capacity)

    def _indices(self, batch: int, generator: torch.Generator) -> Tensor:
        """Row indices (members, batch), uniform over each member's own transitions."""
        shape, device = (self.members, batch), generator.device
        if (self.sizes == self.size).all():  # nothing dropped: the draws of every earlier run
            index = torch.randint(0, self.size, shape, generator=generator, device=device)
            return index.to(self.rows.device)
        sizes = torch.as_tensor(self.sizes, device=device).unsqueeze(1)
        offset = (torch.rand(shape, generator=generator, device=device) * sizes).long()
        offset = torch.minimum(offset, sizes - 1)  # rand < 1, but its product may round up
        return ((self.position - sizes + offset) % self.capacity).to(self.rows.device)

    def sample(
        self, batch: int, generator: torch.Generator, n_step: int = 1, gamma: float = 0.99
    ) -> Batch:
        """A batch per member, own draws; with ``n_step`` > 1, n-step returns (see ``Batch``)."""
        index = self._indices(batch, generator)
        rows = self.rows[self._member_index, index]
        o, a = self.obs_dim, self.act_dim
        obs, action = rows[..., :o], rows[..., o : o + a]
        if n_step == 1:
            next_obs, terminated = rows[..., o + a + 1 : 2 * o + a + 1], rows[..., -1]
            return Batch(obs, action, rows[..., o + a], next_obs, terminated, gamma)
        return Batch(obs, action, *self._n_step(index, n_step, gamma))

    def _n_step(self, index: Tensor, n: int, gamma: float) -> tuple[Tensor, ...]:
        """Reward sums, last next states, their terminations and discounts of the windows of
        ``n`` transitions starting at ``index``, each cut after an episode's end or at the
        newest stored transition."""
        steps = torch.arange(n, device=index.device)
        window = (index.unsqueeze(-1) + steps) % self.capacity  # (members, batch, n)
        newer = (self.position - 1 - index) % self.capacity  # transitions stored after index
        ended = self.ends[self._member_index.unsqueeze(-1), window]
        # transition k counts if none before it ended its episode and it has been stored
        before = torch.cumsum(ended.long(), dim=-1) - ended.long()
        counts = (before == 0) & (steps <= newer.unsqueeze(-1))
        rows = self.rows[self._member_index.unsqueeze(-1), window]
        o, a = self.obs_dim, self.act_dim
        powers = gamma ** steps.to(rows.dtype)
        reward = (rows[..., o + a] * powers * counts).sum(dim=-1)
        last = counts.sum(dim=-1, keepdim=True) - 1  # the window's last counted transition
        end_row = rows.gather(2, last.unsqueeze(-1).expand(-1, -1, -1, self.width)).squeeze(2)
        discount = gamma ** (last.squeeze(-1) + 1).to(rows.dtype)
        return reward, end_row[..., o + a + 1 : 2 * o + a + 1], end_row[..., -1], discount

    # ---- the dynamic buffer (RLx2) ---------------------------------------------------------
    def oldest(self, count: int) -> tuple[Tensor, Tensor]:
        """States and noise-free actions (μ) of each member's ``count`` oldest transitions."""
        assert self.policy_actions is not None, "this buffer keeps no policy actions"
        sizes = torch.as_tensor(self.sizes, device=self.rows.device).unsqueeze(1)
        steps = torch.arange(count, device=self.rows.device)
        index = (self.position - sizes + torch.minimum(steps, sizes - 1)) % self.capacity
        obs = self.rows[self._member_index, index][..., : self.obs_dim]
        return obs, self.policy_actions[self._member_index, index]

    def drop_oldest(self, members: np.ndarray, fraction: float) -> None:
        """Forget the oldest ``fraction`` of the transitions of ``members`` (bool (E,))."""
        drop = (fraction * self.sizes).astype(np.int64)
        self.sizes = np.where(members, self.sizes - drop, self.sizes)

    # ---- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The stored transitions, copied only where they must be: a full buffer on the CPU is
        saved as it is (a copy of a 1M-step buffer would double the run's memory at its last
        checkpoint), a partly full one as a copy of its rows (saving a view would write the
        whole allocation), and one on a GPU by its one copy to the host."""
        state = {
            "rows": self._saved(self.rows),
            "ends": self._saved(self.ends),
            "position": self.position,
            "size": self.size,
            "sizes": torch.from_numpy(self.sizes.copy()),
        }
        if self.policy_actions is not None:
            state["policy_actions"] = self._saved(self.policy_actions)
        return state

    def _saved(self, values: Tensor) -> Tensor:
        if values.device.type != "cpu":
            return values[:, : self.size].cpu()
        return values if self.size == self.capacity else values[:, : self.size].clone()

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved buffer; into a larger one (an extended run), oldest row first.
        Checkpoints older than episode ends take them from the terminations."""
        rows, size, position = state["rows"], state["size"], state["position"]
        if rows.shape[0] != self.members or rows.shape[2] != self.width:
            raise ValueError("replay buffer in the checkpoint does not match this run's shapes")
        if size > self.capacity:
            raise ValueError(f"checkpoint holds {size} transitions, capacity is {self.capacity}")
        saved = {"rows": rows, "ends": state.get("ends", rows[..., -1] > 0)}
        if self.policy_actions is not None:
            saved["policy_actions"] = state.get("policy_actions", rows[..., self._actions()])
        if self.capacity > size and position != size:  # a wrapped buffer, now with more room
            saved = {k: torch.cat([v[:, position:], v[:, :position]], 1) for k, v in saved.items()}
            position = size
        for name, values in saved.items():
            getattr(self, name)[:, :size] = values.to(self.rows.device)
        self.position, self.size = position % self.capacity, size
        sizes = state.get("sizes")
        self.sizes = np.full(self.members, size) if sizes is None else np.asarray(sizes).copy()

    def _actions(self) -> slice:
        return slice(self.obs_dim, self.obs_dim + self.act_dim)
