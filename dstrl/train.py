"""The training loop: act, step, store, update, evaluate, log, checkpoint.

One loop drives a population of ``seeds`` agents in lockstep (see the README, Populations). It is
built to run unattended for a day: one writer per run directory, atomic checkpoints written only
from finite state, diverged agents halted while the others go on (``dstrl.health``), write
failures reported in one line with the last checkpoint intact, and subnormal floats flushed.
"""

from __future__ import annotations

import json
import numbers
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dstrl.agents.base import ActorCritic
from dstrl.agents.sac import SAC
from dstrl.agents.td3 import TD3
from dstrl.analysis.metrics import final_return, learning_curve_area, mean_std
from dstrl.checkpoint import MISFITS, load_checkpoint, misfit, save_checkpoint
from dstrl.config import ConfigError, TrainConfig, topology_of
from dstrl.data.envs import (
    SplitStep,
    check_env,
    env_states,
    make_vector_env,
    restore_env_states,
    unsaved_state,
)
from dstrl.data.replay import ReplayBuffer
from dstrl.errors import CaptureError, CheckpointError, WorkerError
from dstrl.evaluation import evaluate
from dstrl.graphs import GraphedActing, GraphedUpdates, capture_for
from dstrl.health import DivergedError, Health, advice
from dstrl.logs import CsvLog, TensorBoard
from dstrl.resume import check_resumed, finished_without_checkpoint, start_or_resume
from dstrl.rundir import (
    CHECKPOINT,
    RunDirError,
    busy,
    describe,
    exclusive,
    holds_run_files,
    make_run_dir,
    refuse_foreign_files,
    remove_temporaries,
    training_now,
    write_atomic,
)
from dstrl.signals import STOPS, handling
from dstrl.sparse.distributions import SparsityError

EVAL_FIELDS = ["step", "member", "seed", "return", "method"]
FLOAT32_MAX = float(np.finfo(np.float32).max)
DORMANT_BATCH = 256  # states per dormant-neuron measurement (ReDo uses 64 to 256)
DYNAMIC_BUFFER_CHECKED = 2_048  # RLx2: the oldest 8 batches of 256 transitions
DYNAMIC_BUFFER_DROPPED = 0.1  # RLx2: the oldest tenth goes
CHECKPOINT_KEYS = {
    "agent",
    "buffer",
    "envs",
    "obs",
    "step",
    "wall_seconds",
    "flops",
    "learning_wall",
    "learning_steps",
    "history",
    "changed",
    "steps_planned",
}


def check_device(name: str) -> torch.device:
    """The torch device ``name`` if dstrl can train on it here; else a ConfigError."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"--device {name!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for, but this machine has no GPU")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: dstrl runs on cpu or cuda")
    return device


def check_config(config: TrainConfig) -> tuple[torch.device, int, np.ndarray, np.ndarray]:
    """Check what can be checked before agents are built (the options, the device, the
    environment), raising ConfigError; the device, and the observation size and action bounds."""
    config.validate()
    device = check_device(config.device)
    try:
        obs_dim, low, high = check_env(config.env)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return device, obs_dim, low, high


def check_new_run_dir(run_dir: Path) -> None:
    """An error that says what to do unless ``run_dir`` is free for a new run: empty, or absent."""
    if not holds_run_files(run_dir):
        return
    pid = training_now(run_dir)
    if pid is not None:
        raise RunDirError(busy(run_dir, pid))
    if (run_dir / CHECKPOINT).exists():
        then = "--resume to continue it"
    else:
        refuse_foreign_files(run_dir)
        then = "--auto-resume to start it afresh (it has no checkpoint to continue from)"
    raise ConfigError(f"{run_dir} already holds a run; pass {then}, or choose another --out")


def build_agent(config: TrainConfig) -> ActorCritic:
    """Validate the configuration and construct the agents; raises ConfigError on bad input."""
    device, obs_dim, low, high = check_config(config)
    generator = torch.Generator(device).manual_seed(config.seed)
    try:
        kind = SAC if config.family == "sac" else TD3
        return kind(
            obs_dim,
            low,
            high,
            config.members,
            config.agent,
            config.sparsity(),
            generator,
            config.recycling(),
            config.sparsity("actor"),
            config.topologies if len(config.methods) > 1 else None,
        )
    except (SparsityError, ValueError) as error:
        raise ConfigError(str(error)) from error


@dataclass
class Trained:
    """A run's agents as its last checkpoint left them."""

    config: TrainConfig  # as saved
    agent: ActorCritic
    step: int
    diverged: list[int]  # members halted in training


def load_trained(run_dir: Path, device: str = "cpu") -> Trained:
    """The agents of the run in ``run_dir`` on ``device``, for evaluation or export; a
    CheckpointError that says what to do if the checkpoint does not fit the configuration."""
    config = TrainConfig.load(run_dir)
    state = load_checkpoint(run_dir)
    agent = build_agent(replace(config, device=device, out=run_dir))
    try:
        agent.load_state_dict(state["agent"])
        step = int(state["step"])
        diverged = sorted(int(event["member"]) for event in state.get("diverged", []))
    except MISFITS as error:
        raise misfit(run_dir, error) from error
    return Trained(config, agent, step, diverged)


def member_seeds(config: TrainConfig) -> list[int]:
    """Each member's seed: the algorithms of a mixed population share seeds."""
    return [config.seed + i % config.seeds for i in range(config.members)]


def member_methods(config: TrainConfig) -> list[str]:
    """Each member's algorithm."""
    return [algo for algo in config.methods for _ in range(config.seeds)]


class StoppedAtCheckpoint(KeyboardInterrupt):
    """Ctrl-C stopped training at a checkpoint (the command that continues it was printed)."""


@contextmanager
def _deferred_interrupt():
    """Turn Ctrl-C, SIGTERM, SIGUSR1 and SIGHUP into a flag, so the loop can checkpoint before
    it exits; a second Ctrl-C stops at once (the last checkpoint stays whole: it is replaced
    atomically)."""
    caught: list[int] = []

    def defer(signum, frame):
        if signum == signal.SIGINT and signal.SIGINT in caught:
            raise KeyboardInterrupt("stopped at once by a second Ctrl-C")
        caught.append(signum)
        if signum == signal.SIGINT:
            with suppress(Exception):  # a write the signal interrupted cannot be reentered
                print(
                    "\ndstrl: stopping at a checkpoint after this step (Ctrl-C again: at once)",
                    file=sys.stderr,
                    flush=True,
                )

    with handling([signal.SIGINT, *STOPS], defer):
        yield caught


def train(config: TrainConfig, stop_after: int | None = None) -> dict | None:
    """Run (or resume) training; returns the summary, or None if ``stop_after`` ended the run
    early at that step (with a checkpoint).

    Ctrl-C and SIGTERM stop the run at a checkpoint, then raise KeyboardInterrupt or
    SystemExit(130), so that a caller's loop of runs stops too. Raises ConfigError /
    CheckpointError for bad input, RunDirError when the run directory cannot be written,
    DivergedError when every agent has diverged.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train() takes a TrainConfig, not {type(config).__name__}")
    if stop_after is not None:
        integral = isinstance(stop_after, numbers.Integral) and not isinstance(stop_after, bool)
        if not integral or stop_after < 0:
            raise ConfigError(
                f"stop_after must be a step (an integer, 0 or more), not {stop_after!r}"
            )
        stop_after = int(stop_after)
    config.validate()  # before torch's settings take any of its values
    with torch_settings(config):
        return _train(config, stop_after)


def flushing_subnormals() -> bool:
    """Whether this thread's CPU arithmetic flushes subnormal floats to zero (torch can set it
    but not read it)."""
    return bool(torch.tensor(torch.finfo(torch.float32).tiny).mul(0.5) == 0)


@contextmanager
def torch_settings(config: TrainConfig):
    """Torch's process-wide settings for a run, and the caller's given back after it: a
    notebook's torch stayed at one thread, flushing subnormals, after a run."""
    threads, flushing = torch.get_num_threads(), flushing_subnormals()
    matmul = torch.backends.cuda.matmul
    tf32 = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"  # torch < 2.9
    precision = getattr(matmul, tf32)
    # Subnormal floats (|x| < 1.2e-38) make CPU arithmetic many times slower, and weights that
    # only weight decay moves shrink into them over a long run (see README, Long runs). Flush
    # them to zero; set before torch starts its worker threads, which inherit the setting.
    torch.set_flush_denormal(True)
    torch.set_num_threads(config.threads)
    if config.device.startswith("cuda"):
        named = "tf32" if config.tf32 else "ieee"
        setattr(matmul, tf32, named if tf32 == "fp32_precision" else config.tf32)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushing)
        setattr(matmul, tf32, precision)


def _train(config: TrainConfig, stop_after: int | None) -> dict | None:
    if config.auto_resume:
        if config.resume:
            raise ConfigError("give resume or auto_resume, not both")
        config = start_or_resume(config)
    if config.resume and finished_without_checkpoint(config):  # nothing to do: its results
        return json.loads((config.run_dir / "summary.json").read_text())
    if config.resume:
        check_resumed(config)  # before anything is written
    agent = build_agent(config)
    run_dir = config.run_dir
    make_run_dir(run_dir)
    with exclusive(run_dir):
        with _deferred_interrupt() as pending:  # a signal while the run starts: step 0
            remove_temporaries(run_dir)
            state = None
            if config.resume:
                state = partial(_load_state, run_dir)  # once the environment workers exist
            else:
                check_new_run_dir(run_dir)
                unsaved = unsaved_state(config.env)
                if unsaved:
                    print(
                        f"dstrl: note: a resumed run will not continue {config.env} exactly: a "
                        f"checkpoint cannot keep {', '.join(unsaved)} (numbers, arrays, and "
                        "lists, tuples and dicts of them are kept)",
                        file=sys.stderr,
                        flush=True,
                    )
            if agent.sparsity is not None and not (
                agent.actor_sparse.weights or agent.critic_sparse.weights
            ):
                note = config.dense_note([agent.actor.shapes, agent.critic.shapes])
                print(f"dstrl: note: {note}", file=sys.stderr, flush=True)
            trainer = Trainer(config, agent, state)  # a checkpoint that does not fit fails here
        summary = trainer.run(stop_after, pending)
    if trainer.signalled == signal.SIGINT:
        raise StoppedAtCheckpoint(f"stopped at step {trainer.step:,}")
    if trainer.signalled in STOPS:
        raise SystemExit(130)
    return summary


def _load_state(run_dir: Path) -> dict:
    """The run's checkpoint (mapped from its file, on the CPU; loading copies onto the device)."""
    state = load_checkpoint(run_dir)
    missing = CHECKPOINT_KEYS - set(state)
    if missing:
        raise CheckpointError(f"{run_dir}/checkpoint.pt lacks {sorted(missing)}; cannot resume")
    return state


class Trainer:
    """One run's agents, environments, replay, logs and counters, advanced stage by stage."""

    def __init__(
        self,
        config: TrainConfig,
        agent: ActorCritic,
        state: dict | Callable[[], dict] | None,
    ) -> None:
        """``state``: a checkpoint to continue from, or what loads it, called once the
        environment workers are forked (forked after, each would map the whole file for the
        rest of the run, and keep its disk space after the next checkpoint replaced it); the
        trainer copies it, and keeps no reference to it."""
        self.config, self.agent = config, agent
        self.run_dir = config.run_dir
        self.seeds = member_seeds(config)
        self.methods = member_methods(config)
        workers = 0
        if config.vector_env == "async":
            cores = max((os.cpu_count() or 2) - 1, 1)  # one is the training process's
            workers = config.env_workers or min(config.members, cores)
        # worker processes are forked before the replay buffer exists: forked after, they would
        # keep the pages of its zeros that the run's writes copy, a second buffer by the end
        self.envs = make_vector_env(config.env, config.members, workers)
        self.eval_envs = make_vector_env(config.env, config.members, workers)
        try:  # a failure from here leaves no worker process behind
            self._setup(config, agent, state)
        except BaseException:
            self.envs.close()
            self.eval_envs.close()
            raise

    def _setup(
        self, config: TrainConfig, agent: ActorCritic, state: dict | Callable[[], dict] | None
    ) -> None:
        """Everything of ``__init__`` after the environment workers are forked."""
        run_dir = self.run_dir
        if callable(state):
            state = state()
        obs_dim = agent.actor.sizes[0]
        self.buffer = ReplayBuffer(
            config.members,
            min(config.buffer_size, config.steps),
            obs_dim,
            agent.act_dim,
            agent.device,
            policy_actions=config.replay == "dynamic",
        )
        self.n_step_from = round(config.n_step_start * config.learning_steps)  # in updates
        self.policy_distance: np.ndarray | None = None  # the dynamic buffer's last measurement
        self.stepping = SplitStep(self.envs)
        self.obs, _ = self.envs.reset(seed=self.seeds)
        space = self.envs.single_action_space
        self.low, self.high = space.low, space.high
        self.middle = (self.low + self.high) / 2  # the action of a halted agent
        self.step, self.wall = 0, 0.0
        self.flops = [0] * len(config.methods)  # so far, per algorithm (all its agents)
        self.changed = [0] * len(config.methods)  # connections, this log interval, per algorithm
        self.learning_wall, self.learning_steps = 0.0, 0  # after warm-up, evaluation excluded
        self.history: list[np.ndarray] = []
        self.last_checkpoint: int | None = None
        self.continues = False  # resumed with steps to go: a summary it has is out of date
        self.off_grid_end = False  # an extended run's old last evaluation, not on the grid
        self.signalled: int | None = None  # the signal that stopped the loop
        mixed = self.methods if len(config.methods) > 1 else None
        self.health = Health(self.seeds, advice(config.family, config.agent.learning_rate), mixed)
        self.layer_names = _layer_names(agent)
        evaluations = run_dir / "evaluations.csv"
        if state is not None and state["step"] >= config.eval_every and not evaluations.exists():
            raise CheckpointError(  # the summary and the report would disagree without a word
                f"{evaluations} is missing, and the checkpoint of step {state['step']:,} follows "
                "evaluations it held: put it back, or train the run afresh in another --out"
            )
        self.evaluations = CsvLog(evaluations, EVAL_FIELDS)
        if state is not None:
            held = len([s for s in self.evaluations.steps() if s <= state["step"]])
            if held < len(state["history"]):
                raise CheckpointError(  # a resume would append to a record with a hole
                    f"{evaluations} holds {held} evaluations up to step {state['step']:,}, the "
                    f"checkpoint {len(state['history'])}: it was cut short or emptied; put the "
                    "whole file back, or train the run afresh in another --out"
                )
        self.metrics = CsvLog(
            run_dir / "train_metrics.csv",
            [
                "step",
                *agent.loss_names,
                "flops",
                *self.layer_names,
                "connections_changed",
                "replay_size",
                "policy_distance",
                *agent.dormant_names(),
                "neurons_recycled",
                "env_steps_per_second",
                *[f"{name}@{algo}" for algo in self._mixed() for name in self._per_method()],
            ],
        )
        if state is not None:
            self._restore(state)
        self.update, self.explore = agent.update, agent.explore  # or replayed from CUDA graphs:
        if config.cuda_graph:
            try:
                capture = capture_for(agent)
                self.update = GraphedUpdates(agent, capture)
                self.explore = GraphedActing(agent, capture)
            except ValueError as error:
                raise ConfigError(f"--cuda-graph: {error}") from error
        self._costs()

    # ---- persistence --------------------------------------------------------------------
    def _restore(self, state: dict) -> None:
        config, run_dir = self.config, self.run_dir
        try:
            self.agent.load_state_dict(state["agent"])
            self.buffer.load_state_dict(state["buffer"])
            restore_env_states(self.envs, state["envs"])
            self.obs = np.array(state["obs"])
            self.step, self.wall = state["step"], state["wall_seconds"]
            flops = state["flops"]
            self.flops = list(flops) if isinstance(flops, list) else [flops]
            changed = state["changed"]  # in earlier versions one number for all algorithms
            self.changed = (
                list(changed)
                if isinstance(changed, list)
                else [changed] + [0] * (len(config.methods) - 1)
            )
            self.learning_wall = state["learning_wall"]
            self.learning_steps = state["learning_steps"]
            self.history = [np.array(h) for h in state["history"]]
            self.health.load_state_dict(state.get("diverged", []))
            distance = state.get("policy_distance")
            self.policy_distance = None if distance is None else np.array(distance)
        except MISFITS as error:
            raise misfit(run_dir, error) from error
        if self.health.any:
            self.agent.halt(torch.from_numpy(self.health.halted))
        # multi-step targets, once on, stay on (an extension moves the planned switch later)
        switched = state.get("n_step_from")
        if switched is not None and self.agent.updates >= switched:
            self.n_step_from = switched
        self.last_checkpoint = self.step
        self.continues = self.step < config.steps
        if self.step == state["steps_planned"] < config.steps and self.step % config.eval_every:
            self.history.pop()  # an extended run: its old end-of-run evaluation is off the grid
            self.off_grid_end = True

    def _checkpoint(self, started: float) -> None:
        """Write the checkpoint, after halting any agent whose numbers are no longer finite."""
        self._check_agents()
        save_checkpoint(
            {
                "agent": self.agent.state_dict(),
                "buffer": self.buffer.state_dict(),
                "envs": env_states(self.envs),
                "obs": torch.from_numpy(np.array(self.obs)),
                "step": self.step,
                "wall_seconds": self.wall + time.perf_counter() - started,
                "flops": self.flops,
                "learning_wall": self.learning_wall,
                "learning_steps": self.learning_steps,
                "history": [h.tolist() for h in self.history],
                "changed": self.changed,
                "steps_planned": self.config.steps,
                "n_step_from": self.n_step_from,
                "diverged": self.health.state_dict(),
                "policy_distance": None
                if self.policy_distance is None
                else torch.from_numpy(self.policy_distance),
            },
            self.run_dir,
        )
        self.last_checkpoint = self.step

    # ---- divergence ---------------------------------------------------------------------
    def _halt(self, bad: np.ndarray, reason: str, step: int | None = None) -> None:
        """Halt the members flagged in ``bad``, found at ``step`` (default: the last completed
        one); stop the run when none is left."""
        new = self.health.record(bad, self.step if step is None else step, reason)
        if new.any():
            self.agent.halt(torch.from_numpy(new))
        if self.health.all:
            raise DivergedError(self.health.message(self.last_checkpoint))

    def _check_agents(self) -> None:
        """Losses since the last check, weights, targets and optimiser moments: one sync."""
        for part, bad in self.agent.nonfinite().items():
            if bad.any():
                self._halt(bad, f"its {part} became NaN or infinite")

    def _halt_nonfinite(self, reason: str, *values: np.ndarray, step: int | None = None) -> None:
        """Halt every member whose row of ``values`` (each (E, ...)) holds a NaN, an infinity,
        or a number too large for the float32 replay buffer; the common case costs one check
        per array."""
        if all((np.abs(v) <= FLOAT32_MAX).all() for v in values):
            return
        fine = [(np.abs(v) <= FLOAT32_MAX).reshape(len(v), -1).all(axis=1) for v in values]
        self._halt(~np.logical_and.reduce(fine), reason, step)

    def _halted_rows(self, values: np.ndarray, fill) -> np.ndarray:
        if not self.health.any:
            return values
        halted = self.health.halted.reshape(-1, *[1] * (values.ndim - 1))
        return np.where(halted, fill, values)

    # ---- the loop -----------------------------------------------------------------------
    def _act(self) -> tuple[np.ndarray, np.ndarray]:
        """Exploratory actions, and the noise-free ones they came from (μ; in the random
        warm-up, the actions themselves)."""
        config = self.config
        if self.step < config.start_steps:
            generator = self.agent.generator
            u = torch.rand(
                (config.members, self.low.size), generator=generator, device=generator.device
            )
            action = policy_action = self.low + u.cpu().numpy() * (self.high - self.low)
        else:
            action, policy_action = self.explore(self.obs)
            self._count_flops("inference_flops")
            reason = "its actor gave a NaN or infinite action"
            self._halt_nonfinite(reason, action, step=self.step + 1)
        return self._halted_rows(action, self.middle), self._halted_rows(policy_action, self.middle)

    def _begin_step(self) -> tuple[np.ndarray, np.ndarray]:
        """Act, and send the actions to the environments (``_act``'s pair)."""
        action, policy_action = self._act()
        self.stepping.send(action)
        return action, policy_action

    def _step_envs(self, action: np.ndarray, policy_action: np.ndarray) -> None:
        """Finish the step that ``_begin_step`` began, and store it (with the true final
        observation of an episode, for bootstrapping)."""
        next_obs, reward, terminated, truncated, info = self.stepping.receive()
        stored_next = next_obs
        done = terminated | truncated
        if done.any():
            stored_next = next_obs.copy()
            stored_next[done] = np.stack(info["final_obs"][done])
        reason = "its environment returned a NaN or infinite observation or reward"
        checked = (reward, stored_next, next_obs) if done.any() else (reward, next_obs)
        self._halt_nonfinite(reason, *checked, step=self.step + 1)
        self.buffer.add(
            self.obs,
            action,
            self._halted_rows(reward, 0.0),
            self._halted_rows(stored_next, 0.0),
            terminated,
            done,
            policy_action,
        )
        self.obs = self._halted_rows(next_obs, 0.0)
        self.step += 1

    def _learn(self, step: int) -> None:
        """The update of ``step`` (1-based), after the dynamic buffer's check if one is due."""
        agent, config = self.agent, self.config
        if config.replay == "dynamic" and step % config.buffer_check_every == 0:
            self._adapt_buffer()
        n_step = config.n_step if agent.updates >= self.n_step_from else 1
        batch = self.buffer.sample(
            config.agent.batch_size, agent.generator, n_step, config.agent.gamma
        )
        self.update(*batch)
        self._count_flops("train_flops")
        if agent.last_topology_change is not None:
            change = agent.last_topology_change
            moved = np.zeros(agent.members, dtype=np.int64)  # no layer: every one dense by ER
            for layer in (*change["actor"], *change["critic"]):
                moved += layer  # per member
            for i in range(len(self.changed)):
                self.changed[i] += int(moved[self._block(i)].sum())
            self._costs()  # pruning changes the connection count

    def _log(self, steps: int, seconds: float) -> None:
        """A row of train_metrics.csv; ``steps`` in ``seconds`` of loop time since the last row
        (evaluation excluded) give its speed."""
        self._check_agents()
        live = ~self.health.halted
        row = {
            "step": self.step,
            "flops": sum(self.flops),
            "connections_changed": sum(self.changed),
            "neurons_recycled": self.agent.pop_recycled(),
            "replay_size": float(self.buffer.sizes[live].mean()),
            "env_steps_per_second": steps * self.config.members / seconds,
        }
        per_member = {**self.agent.pop_losses(), **self._dormant()}  # each (E,)
        row.update({k: float(v[live].mean()) for k, v in per_member.items()})
        if self.policy_distance is not None:
            row["policy_distance"] = float(self.policy_distance[live].mean())
        row.update(zip(self.layer_names, self.agent.layer_densities(), strict=True))
        for i, algo in enumerate(self._mixed()):  # a mixed population: each method's own
            block = self._block(i)
            ok = live[block]
            own = {**per_member, "replay_size": self.buffer.sizes} if ok.any() else {}
            values = {k: v[block][ok].mean() for k, v in own.items()}  # over its live agents
            values.update(flops=self.flops[i])
            values.update(connections_changed=self.changed[i])
            values.update(zip(self.layer_names, self.agent.layer_densities(block), strict=True))
            row.update({f"{k}@{algo}": float(v) for k, v in values.items()})
        self.metrics.write([row])
        self.board.scalars({f"train/{k}": v for k, v in row.items() if k != "step"}, self.step)
        self.changed = [0] * len(self.changed)

    def _adapt_buffer(self) -> None:
        """RLx2's dynamic buffer: each agent whose policy has moved away from the noise-free
        actions of its oldest transitions forgets the oldest tenth, down to a minimum size."""
        config = self.config
        obs, policy_action = self.buffer.oldest(DYNAMIC_BUFFER_CHECKED)
        self.policy_distance = self.agent.policy_distance(obs, policy_action)
        shrink = (
            (self.policy_distance > config.buffer_policy_distance)
            & (self.buffer.sizes > config.buffer_min_size)
            & ~self.health.halted
        )
        self.buffer.drop_oldest(shrink, DYNAMIC_BUFFER_DROPPED)

    def _dormant(self) -> dict[str, np.ndarray]:
        """Each agent's dormant-neuron share per hidden layer, on replayed states that a
        generator of its own draws (seeded by the step: training's random stream is untouched,
        and a resumed run measures the same states)."""
        device = self.agent.device
        generator = torch.Generator(device).manual_seed(self.config.seed * 1_000_003 + self.step)
        obs, action, *_ = self.buffer.sample(DORMANT_BATCH, generator)
        return self.agent.dormant(obs, action, self.config.dormant_threshold)

    def _evaluate(self) -> None:
        agent = self.agent
        returns = evaluate(
            lambda o: self._halted_rows(agent.act(o, explore=False), self.middle),
            self.eval_envs,
            self.config.eval_episodes,
            self.seeds,
            len(self.history),
        )
        self._halt_nonfinite("its evaluation return was NaN or infinite", returns)
        returns = self._halted_rows(returns, 0.0)  # placeholders, never reported
        self.history.append(returns)
        live = ~self.health.halted
        self.evaluations.write(
            [
                {"step": self.step, "member": i, "seed": s, "return": float(r), "method": m}
                for i, (s, r, m) in enumerate(zip(self.seeds, returns, self.methods, strict=True))
                if live[i]
            ]
        )
        mean = float(returns[live].mean())
        scalars, shown = {"eval/return_mean": mean}, {"eval_return": f"{mean:.1f}"}
        if self._mixed():  # each method's mean too, and only those in the progress bar
            shown = {}
            for i, algo in enumerate(self._mixed()):
                block = self._block(i)
                if live[block].any():
                    value = float(returns[block][live[block]].mean())
                    scalars[f"eval/return_mean@{algo}"], shown[algo] = value, f"{value:.1f}"
        self.board.scalars(scalars, self.step)
        self.bar.set_postfix(shown, refresh=False)

    def run(self, stop_after: int | None, pending: Iterable[int] = ()) -> dict | None:
        """Train to ``config.steps`` (or ``stop_after``), then write the summary; None if it
        stopped early. ``pending``: signals that came before, to stop at the first step."""
        config = self.config
        self.board = TensorBoard(None)  # opened below, where a failure to write is caught
        self.bar = tqdm(
            total=config.steps,
            initial=self.step,
            disable=not config.progress,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
            desc=f"{' '.join(config.methods)} {config.env}",
        )
        started = time.perf_counter()
        try:
            # a finished run's rerun logs nothing: an events file of its own would be empty
            events = self.run_dir / "tensorboard" if config.tensorboard else None
            events = events if self.step < config.steps else None
            self.board = TensorBoard(events, resumed_at=self.step)
            with _deferred_interrupt() as interrupted:
                interrupted += pending
                self._commit()
                self._loop(stop_after, started, interrupted)
            self.board.close()  # the last events written, or their failure one of writing
        except OSError as error:
            raise self._write_failure(error) from error
        except (RunDirError, WorkerError, CaptureError) as error:
            raise type(error)(f"{error}; {self._resume_hint()}") from error
        finally:
            self.bar.close()
            with suppress(OSError):  # after another failure, that one is what to tell
                self.board.close()
            self.envs.close()
            self.eval_envs.close()
        self.wall += time.perf_counter() - started
        if self.step < config.steps:
            print(f"stopped at step {self.step:,}; continue with: {self._resume_command()}")
            return None
        summary = self._summary()
        try:
            write_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        except RunDirError as error:  # the run is done: its summary comes from the checkpoint
            raise RunDirError(f"{error}; {self._resume_hint()}") from error
        return summary

    def _commit(self) -> None:
        """Make the run directory say what this run is before anything in it changes: a run
        with steps to go is unfinished (an extended run's summary gone) and has its new
        configuration, and only then do its logs lose what comes after the checkpoint (an
        extension's old last evaluation among it). In another order, a run stopped in between
        (a kill, a full disk) would be a finished run with evaluations missing."""
        if self.continues:
            (self.run_dir / "summary.json").unlink(missing_ok=True)
        write_atomic(self.run_dir / "config.json", json.dumps(self.config.to_json(), indent=2))
        if self.last_checkpoint is not None:
            if self.off_grid_end:
                self.evaluations.truncate_after(self.step - 1)
            self.evaluations.truncate_after(self.step)
            self.metrics.truncate_after(self.step)

    def _loop(self, stop_after: int | None, started: float, interrupted: list[int]) -> None:
        config = self.config
        end = config.steps if stop_after is None else min(stop_after, config.steps)
        # the current log interval: its start (moved on by evaluations) and first step
        interval, interval_step = time.perf_counter(), self.step
        while self.step < end and not interrupted:
            tick = time.perf_counter()
            step = self.step + 1  # the step this iteration takes
            learns = step > config.start_steps
            actions = self._begin_step()
            if learns and config.overlap:  # transitions 1..step-1
                self._learn(step)
            self._step_envs(*actions)
            if learns and not config.overlap:  # transitions 1..step
                self._learn(step)
            if learns:
                self.learning_wall += time.perf_counter() - tick
                self.learning_steps += 1
            if self.step % config.log_every == 0:
                self._log(self.step - interval_step, time.perf_counter() - interval)
                interval, interval_step = time.perf_counter(), self.step
            if self.step % config.eval_every == 0 or self.step == config.steps:
                evaluation = time.perf_counter()
                self._evaluate()
                interval += time.perf_counter() - evaluation
            if self.step % config.checkpoint_every == 0:
                self._checkpoint(started)
            self.bar.update(1)
        if self.step != self.last_checkpoint:  # not a finished run's rerun
            self._checkpoint(started)
        self.signalled = interrupted[0] if interrupted else None

    # ---- failures -----------------------------------------------------------------------
    def _resume_command(self) -> str:
        return f"dstrl train --out {self.run_dir} --resume"

    def _resume_hint(self) -> str:
        if self.last_checkpoint is None:
            return (
                "no checkpoint had been written yet: once this is fixed, start the run again "
                "with --auto-resume (it clears what this attempt left)"
            )
        return (
            f"the checkpoint of step {self.last_checkpoint:,} is intact: fix this, then "
            f"continue with {self._resume_command()}"
        )

    def _write_failure(self, error: OSError) -> RunDirError:
        return RunDirError(f"cannot write {describe(error)}; {self._resume_hint()}")

    # ---- results ------------------------------------------------------------------------
    def _summary(self) -> dict:
        """summary.json: each algorithm's results under ``methods``, beside the population's
        shared facts; a single algorithm's also at the top level, as before."""
        config = self.config
        shared = {
            "env": config.env,
            "steps": config.steps,
            "diverged": self.health.state_dict(),
            "wall_seconds": self.wall,
            "env_steps_per_second": config.steps * config.members / self.wall,
            "learning_steps_per_second": (
                self.learning_steps * config.members / self.learning_wall
                if self.learning_wall
                else None
            ),
        }
        methods = {
            algo: self._method_summary(i) | shared | {"diverged": self._diverged(i)}
            for i, algo in enumerate(config.methods)
        }
        if len(methods) == 1:
            return next(iter(methods.values())) | {"methods": methods}
        return {"algo": list(config.methods), "seeds": self.seeds, **shared, "methods": methods}

    def _diverged(self, index: int) -> list[dict]:
        """The diverged agents of the ``index``-th algorithm."""
        block = range(len(self.seeds))[self._block(index)]
        return [event for event in self.health.state_dict() if event["member"] in block]

    def _method_summary(self, index: int) -> dict:
        """Returns, parameters and FLOPs of the agents of the ``index``-th algorithm."""
        config, agent = self.config, self.agent
        block = self._block(index)
        curves = np.stack(self.history, axis=1)[block]  # (agents, evaluations)
        live = ~self.health.halted[block]
        finals = [final_return(c) if ok else None for c, ok in zip(curves, live, strict=True)]
        areas = [learning_curve_area(c) if ok else None for c, ok in zip(curves, live, strict=True)]
        sparse, dense = agent.cost(members=block), agent.cost(dense=True, members=block)
        dense_run = (
            config.seeds * config.learning_steps * (dense["train_flops"] + dense["inference_flops"])
        )
        run_total = self.flops[index]
        return {
            "algo": config.methods[index],
            "seeds": self.seeds[block],
            "evaluations": curves.shape[1],
            "final_return": _over_live(finals),
            "lca": _over_live(areas),
            "params": {
                "total": sparse["params"],
                "dense_total": dense["params"],
                "ratio": sparse["params"] / dense["params"],
                "actor": sparse["actor_params"],
                "dense_actor": dense["actor_params"],
                "critics": sparse["critic_params"],
                "dense_critics": dense["critic_params"],
            },
            "flops": {
                "train": sparse["train_flops"],
                "dense_train": dense["train_flops"],
                "inference": sparse["inference_flops"],
                "dense_inference": dense["inference_flops"],
                "run_total": run_total,
                "dense_run_total": dense_run,
                "train_ratio": sparse["train_flops"] / dense["train_flops"],
                "run_ratio": run_total / dense_run if dense_run else None,
            },
            "layer_density": {}  # a dense method's, as in a run of its own
            if topology_of(config.methods[index]) == "dense"
            else dict(zip(self.layer_names, agent.layer_densities(block), strict=True)),
        }

    def _mixed(self) -> tuple[str, ...]:
        """The algorithms of a mixed population (none for a single-method run)."""
        methods = self.config.methods
        return methods if len(methods) > 1 else ()

    def _per_method(self) -> list[str]:
        """train_metrics.csv columns that a mixed population also writes per method."""
        agent = self.agent
        return [
            *agent.loss_names,
            "flops",
            *self.layer_names,
            "connections_changed",
            "replay_size",
            *agent.dormant_names(),
        ]

    # ---- costs --------------------------------------------------------------------------
    def _block(self, index: int) -> slice:
        """The members of the ``index``-th algorithm."""
        seeds = self.config.seeds
        return slice(index * seeds, (index + 1) * seeds)

    def _costs(self) -> None:
        """Each algorithm's per-agent costs at the current topology."""
        methods = range(len(self.config.methods))
        self.costs = [self.agent.cost(members=self._block(i)) for i in methods]

    def _count_flops(self, kind: str) -> None:
        """Add one step's FLOPs of ``kind`` (inference_flops, train_flops) for every agent."""
        for i, cost in enumerate(self.costs):
            self.flops[i] += cost[kind] * self.config.seeds


def _over_live(values: list[float | None]) -> dict:
    """``mean_std`` over the members that did not diverge; ``per_seed`` keeps None for those,
    and mean and std are None where every member did (one method of a mixed population)."""
    live = [v for v in values if v is not None]
    summary = mean_std(live) if live else {"mean": None, "std": None}
    summary["per_seed"] = values
    return summary


def _layer_names(agent: ActorCritic) -> list[str]:
    names = []
    for net_name, layers in (("actor", agent.actor_sparse), ("critic", agent.critic_sparse)):
        if layers is not None:
            names += [f"density/{net_name}{i}" for i in layers.indices]
    return names
