"""Replay an agent's gradient steps and acting from CUDA graphs: on a GPU, an update of networks
this small is a few hundred short kernels, and launching them, not running them, takes the time.

There is one graph per ``ActorCritic.graph_key`` (TD3: the critic step alone, and the step that
adds the delayed actor step and target updates), captured the second time its key comes up and
replayed with the batch copied into its static inputs. Eager, as before, run: the first updates
(a warm-up for lazy allocations), each key's first update (state that a step creates lazily, such
as Adam's moments at the first actor step, which comes after the warm-up with a TD3
``policy_delay`` of 4 or more, must exist before a graph holds it: created in the capture, every
replay would create it again, zeroed), a gradient step whose key is None (a rule that grows by
gradient keeps a dense gradient at its topology update), and the periodic part of every update
(topology updates, ReDo, the sparse targets catching up). That part changes masks, weights and
optimiser moments in place, so every graph goes on reading the current ones; what it changes
beyond tensors (the bound of the targets' pruning, say) is part of the key, and a new key is a
new capture. Acting is one graph: observations in, actions and their noise-free means out.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from dstrl.agents.base import ActorCritic
from dstrl.errors import CaptureError

KEPT_GRAPHS = 8
"""Graphs kept at most, the least recently replayed dropped first (each holds its own memory)."""


class Capture(Protocol):
    """How device work is run eagerly before capture, and captured for replay."""

    def run(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` eagerly, as a warm-up for capture; its result."""

    def capture(self, work: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        """Capture ``work`` without running it: what replays it, and its result, whose
        tensors every replay refills."""


def _captured(
    capture: Capture, work: Callable[[], Any], what: str
) -> tuple[Callable[[], None], Any]:
    """``capture.capture(work)``, its failure one line that says what to do."""
    try:
        return capture.capture(work)
    except RuntimeError as error:
        # a failure inside a CUDA capture surfaces as the capture's end failing in its turn
        cause = error.__context__ if isinstance(error.__context__, Exception) else error
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise CaptureError(
            f"capturing {what} as a CUDA graph failed ({reason}); train with --no-cuda-graph"
        ) from error


class CudaCapture:
    """CUDA graphs on a side stream, with the agent's random generator registered, so that
    every replay draws fresh numbers from it (those that eager steps would draw)."""

    def __init__(self, device: torch.device, generator: torch.Generator) -> None:
        self.device, self.generator = device, generator
        self.stream = torch.cuda.Stream(device)

    def run(self, work: Callable[[], Any]) -> Any:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            result = work()
        current.wait_stream(self.stream)
        return result

    def capture(self, work: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)  # before the capture begins
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                result = work()
        finally:  # a failed capture's end leaves its stream the current one
            torch.cuda.set_stream(current)
        return graph.replay, result


def capture_for(agent: ActorCritic) -> Capture:
    """The capture of the agent's device (CUDA only)."""
    if agent.device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, not {agent.device}")
    return CudaCapture(agent.device, agent.generator)


class GraphedUpdates:
    """``agent.update``, with the gradient steps replayed from graphs (see the module)."""

    def __init__(self, agent: ActorCritic, capture: Capture, warmup: int = 3) -> None:
        obstacle = agent.graph_obstacle()
        if obstacle is not None:
            raise ValueError(f"this agent's updates cannot be captured: {obstacle}")
        self.agent, self.capture, self.warmup = agent, capture, warmup
        self.warmed: set[Hashable] = set()  # keys run eagerly once, so capturable
        self.graphs: dict[Hashable, Callable[[], None]] = {}  # least recently replayed first
        self.inputs: list[Tensor] = []  # static batch tensors, shared by every graph
        self.captures = 0
        self.replays = 0  # updates replayed from a graph, out of agent.updates

    def __call__(
        self,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
        discount: Tensor | float | None = None,
    ) -> None:
        """One update, as ``agent.update`` does it."""
        agent = self.agent
        agent.updates += 1
        key = agent.graph_key(discount)
        batch = [obs, action, reward, next_obs, terminated]
        if torch.is_tensor(discount):
            batch.append(discount)
        if key is None:
            agent.gradient_step(*batch[:5], discount)
        elif self.warmup > 0 or key not in self.warmed:
            self.warmup = max(self.warmup - 1, 0)
            self.warmed.add(key)
            self.capture.run(lambda: agent.gradient_step(*batch[:5], discount))
        else:
            replay = self.graphs.pop(key, None) or self._capture(batch, discount)
            self.graphs[key] = replay
            if len(self.graphs) > KEPT_GRAPHS:
                del self.graphs[next(iter(self.graphs))]
            for static, value in zip(self.inputs, batch, strict=False):
                static.copy_(value)
            replay()
            self.replays += 1
        agent.restructure(obs, action)

    def _capture(self, batch: list[Tensor], discount: Tensor | float | None) -> Callable[[], None]:
        self.inputs += [value.clone() for value in batch[len(self.inputs) :]]
        inputs = self.inputs[: len(batch)]
        bootstrap = inputs[5] if torch.is_tensor(discount) else discount
        self.captures += 1
        step = lambda: self.agent.gradient_step(*inputs[:5], bootstrap)  # noqa: E731
        return _captured(self.capture, step, "a gradient step")[0]


class GraphedActing:
    """``agent.explore``, its device work replayed from one graph: the observations are copied
    in, and the actions with their noise-free means come back in one copy."""

    def __init__(self, agent: ActorCritic, capture: Capture, warmup: int = 3) -> None:
        obstacle = agent.graph_obstacle()
        if obstacle is not None:
            raise ValueError(f"this agent's acting cannot be captured: {obstacle}")
        self.agent, self.capture, self.warmup = agent, capture, warmup
        self.replay: Callable[[], None] | None = None
        self.states: Tensor | None = None  # static input (E, 1, obs_dim)
        self.actions: Tensor | None = None  # static output (2, E, act_dim)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What ``agent.explore(obs)`` returns."""
        agent = self.agent
        if self.warmup > 0:
            self.warmup -= 1
            states = agent.states(obs)
            both = self.capture.run(lambda: agent.exploration(states))
        else:
            if self.replay is None:
                self.states = agent.states(obs)
                self.replay, self.actions = _captured(self.capture, self._exploration, "acting")
            self.states.copy_(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(1))
            self.replay()
            both = self.actions
        both = both.to("cpu", copy=True).numpy()  # not the static output itself
        return both[0], both[1]

    @torch.no_grad()
    def _exploration(self) -> Tensor:
        return self.agent.exploration(self.states)
