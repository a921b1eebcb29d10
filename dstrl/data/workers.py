"""Environments stepped in worker processes, a block of them per worker: one short message each
way per worker and step, with actions, observations and results in shared memory.

Gymnasium's AsyncVectorEnv gives every environment a process and a message of its own, which
costs more than a MuJoCo step once there are more environments than cores (32 HalfCheetah-v5 on
16 cores: 1.96 ms per step against 32 x 69 µs / 16 = 0.14 ms of stepping). Here each worker steps
its block one environment after another, as ``SyncVectorEnv`` would, so a run is the same as
stepping them all in the training process.
"""

from __future__ import annotations

import multiprocessing as mp
import select
import signal
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

import gymnasium as gym
import numpy as np

from dstrl.errors import WorkerError
from dstrl.signals import STOPS

EnvMaker = Callable[[], gym.Env]
REPLY_TIMEOUT_S = 120.0
"""A worker that has not answered for this long (an environment step takes well under a
millisecond) is hung or stopped: the run ends with an error rather than wait for ever."""
_training_ends: weakref.WeakSet[Connection] = weakref.WeakSet()  # this process's worker pipes


class _Shared:
    """The arrays that the training process and the workers both see: actions in; observations,
    final observations, rewards, terminations and truncations out."""

    def __init__(self, envs: int, obs_space: gym.spaces.Box, act_space: gym.spaces.Box) -> None:
        self.layout = {
            "actions": ((envs, *act_space.shape), np.float64),  # any float dtype, exactly
            "obs": ((envs, *obs_space.shape), obs_space.dtype),
            "final_obs": ((envs, *obs_space.shape), obs_space.dtype),
            "reward": ((envs,), np.float64),
            "terminated": ((envs,), np.bool_),
            "truncated": ((envs,), np.bool_),
        }
        self.buffers = {
            name: mp.RawArray("b", int(np.prod(shape)) * np.dtype(dtype).itemsize)
            for name, (shape, dtype) in self.layout.items()
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            name: np.frombuffer(self.buffers[name], dtype=dtype).reshape(shape)
            for name, (shape, dtype) in self.layout.items()
        }


def _work(makers: list[EnvMaker], block: slice, shared: _Shared, pipe: Connection) -> None:
    """A worker: step, reset, read or write its block of environments when told to. Ctrl-C
    and the signals that stop a run (SIGTERM, SIGUSR1, SIGHUP) reach the whole process group;
    the training process handles them (it still needs its workers to checkpoint) and ends its
    workers itself. A worker whose training process is gone (killed, even with SIGKILL) ends at
    its next read, which finds the pipe closed: forked with the training process's ends of
    every worker's pipe, its own included, it closes them first."""
    for end in list(_training_ends):
        end.close()
    for signum in (signal.SIGINT, *STOPS):  # forked with the training process's handlers
        signal.signal(signum, signal.SIG_IGN)
    envs = gym.vector.SyncVectorEnv(makers, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    arrays = {name: a[block] for name, a in shared.arrays().items()}
    while True:
        try:
            command, data = pipe.recv()
        except EOFError:
            return
        try:
            if command == "step":  # with the dtype the actions were given in
                actions = arrays["actions"].astype(data)
                obs, reward, terminated, truncated, info = envs.step(actions)
                done = terminated | truncated
                if done.any():
                    arrays["final_obs"][done] = np.stack(info["final_obs"][done])
                for name, value in (
                    ("obs", obs),
                    ("reward", reward),
                    ("terminated", terminated),
                    ("truncated", truncated),
                ):
                    arrays[name][:] = value
                pipe.send(("ok", None))
            elif command == "reset":
                seeds, options = data
                arrays["obs"][:] = envs.reset(seed=seeds, options=options)[0]
                pipe.send(("ok", None))
            elif command == "get_attr":
                pipe.send(("ok", list(envs.get_attr(data))))
            elif command == "set_attr":
                envs.set_attr(*data)
                pipe.send(("ok", None))
            elif command == "close":
                envs.close()
                pipe.send(("ok", None))
                return
        except Exception as error:  # reported to the training process, which raises it
            frame = traceback.extract_tb(error.__traceback__)[-1]
            pipe.send(("error", f"{error!r} at {frame.filename}:{frame.lineno}"))


def _send(pipe: Connection, command: tuple[str, object]) -> None:
    """Send, leaving a dead worker to be reported when its answer is read."""
    try:
        pipe.send(command)
    except (BrokenPipeError, ConnectionResetError):
        pass


class BlockVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` environments in ``workers`` worker processes, contiguous blocks of them.

    Same-step autoreset, as ``make_vector_env``'s: ``info["final_obs"]`` holds the true last
    observation of each finished episode (the only entry of ``info``). ``step_async`` and
    ``step_wait`` split a step so the training process can work while the workers step.
    """

    def __init__(
        self, makers: Sequence[EnvMaker], workers: int, timeout: float = REPLY_TIMEOUT_S
    ) -> None:
        probe = makers[0]()
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        probe.close()
        self.num_envs = len(makers)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._shared = _Shared(
            self.num_envs, self.single_observation_space, self.single_action_space
        )
        self._arrays = self._shared.arrays()
        bounds = np.linspace(0, self.num_envs, min(workers, self.num_envs) + 1).round().astype(int)
        self._blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        context = mp.get_context()
        self._pipes, self._processes, self.timeout = [], [], timeout
        for block in self._blocks:
            mine, theirs = context.Pipe()
            _training_ends.add(mine)
            process = context.Process(
                target=_work,
                args=(list(makers[block]), block, self._shared, theirs),
                daemon=True,
                name=f"dstrl-envs-{block.start}-{block.stop - 1}",
            )
            process.start()
            theirs.close()
            self._pipes.append(mine)
            self._processes.append(process)
        self.closed = False

    @property
    def workers(self) -> int:
        return len(self._blocks)

    def _ask(self, commands: Sequence[tuple[str, object]]) -> list:
        """Send each worker its command, then collect every answer."""
        for pipe, command in zip(self._pipes, commands, strict=True):
            _send(pipe, command)
        return self._answers()

    def _answers(self) -> list:
        """Every worker's answer, in order; a WorkerError names each worker that failed, died
        or has not answered for ``timeout`` seconds."""
        replies: dict[int, tuple[str, object]] = {}
        poll = select.poll()  # one wait for all workers, about a microsecond
        fds = {pipe.fileno(): i for i, pipe in enumerate(self._pipes)}
        for fd in fds:
            poll.register(fd, select.POLLIN)
        deadline = time.monotonic() + self.timeout
        while len(replies) < len(fds):
            ready = poll.poll(max(deadline - time.monotonic(), 0.0) * 1000)
            if not ready:
                break
            for fd, _ in ready:
                replies[fds[fd]] = self._reply(fds[fd])
                poll.unregister(fd)
        answers, failures = [], []
        for i, process in enumerate(self._processes):
            silent = f"no answer for {self.timeout:.0f} s (stopped, or stuck in its environment)"
            status, value = replies.get(i, ("error", silent))
            if status == "error":
                failures.append(f"environment worker {process.name}: {value}")
            answers.append(value)
        if failures:
            raise WorkerError("; ".join(failures))
        return answers

    def _reply(self, i: int) -> tuple[str, object]:
        try:
            return self._pipes[i].recv()
        except (EOFError, ConnectionResetError):
            process = self._processes[i]
            process.join(timeout=1)  # its exit code, once it is gone
            return "error", f"its process ended (exit code {process.exitcode})"

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
        self._ask(
            [("reset", (None if seeds is None else list(seeds[b]), options)) for b in self._blocks]
        )
        return self._arrays["obs"].copy(), {}

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        self._arrays["actions"][:] = actions
        for pipe in self._pipes:
            _send(pipe, ("step", actions.dtype.str))

    def step_wait(self):
        self._answers()
        arrays = self._arrays
        terminated, truncated = arrays["terminated"].copy(), arrays["truncated"].copy()
        done = terminated | truncated
        info: dict = {}
        if done.any():
            final = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final[i] = arrays["final_obs"][i].copy()
            info = {"final_obs": final, "_final_obs": done}
        return arrays["obs"].copy(), arrays["reward"].copy(), terminated, truncated, info

    def step(self, actions: np.ndarray):
        self.step_async(actions)
        return self.step_wait()

    def get_attr(self, name: str) -> tuple:
        blocks = self._ask([("get_attr", name)] * self.workers)
        return tuple(value for block in blocks for value in block)

    def set_attr(self, name: str, values: Sequence) -> None:
        self._ask([("set_attr", (name, list(values[b]))) for b in self._blocks])

    def close_extras(self, **kwargs) -> None:
        """Ask every worker to close its environments, and kill one that does not answer in 5 s
        (hung, or stopped: SIGTERM would stay pending)."""
        for pipe in self._pipes:
            _send(pipe, ("close", None))
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            try:
                answered = pipe.poll(5) and pipe.recv()
            except (EOFError, ConnectionResetError):
                answered = True  # gone already
            process.join(timeout=5 if answered else 0)
            if process.is_alive():
                process.kill()
                process.join()
