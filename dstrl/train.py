"""The training loop: act, step, store, update, evaluate, log, checkpoint.

One loop drives a population of ``seeds`` agents in lockstep (see design.md, Populations).
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from dstrl.agents.base import ActorCritic
from dstrl.agents.sac import SAC
from dstrl.agents.td3 import TD3
from dstrl.analysis.metrics import final_return, learning_curve_area, mean_std
from dstrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dstrl.config import ConfigError, TrainConfig
from dstrl.data.envs import check_env, get_env_state, make_vector_env, set_env_state
from dstrl.data.replay import ReplayBuffer
from dstrl.evaluation import evaluate
from dstrl.logs import CsvLog, TensorBoard
from dstrl.sparse.distributions import SparsityError

EVAL_FIELDS = ["step", "member", "seed", "return"]
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


def build_agent(config: TrainConfig) -> ActorCritic:
    """Validate the configuration and construct the agents; raises ConfigError on bad input."""
    config.validate()
    try:
        device = torch.device(config.device)
    except RuntimeError as error:
        raise ConfigError(f"--device {config.device!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {config.device} was asked for, but this machine has no GPU")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {config.device}: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {config.device}: dstrl runs on cpu or cuda")
    try:
        obs_dim, low, high = check_env(config.env)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    torch.set_num_threads(config.threads)
    generator = torch.Generator(device).manual_seed(config.seed)
    try:
        kind = SAC if config.family == "sac" else TD3
        return kind(obs_dim, low, high, config.seeds, config.agent, config.sparsity(), generator)
    except (SparsityError, ValueError) as error:
        raise ConfigError(str(error)) from error


def member_seeds(config: TrainConfig) -> list[int]:
    return [config.seed + i for i in range(config.seeds)]


@contextmanager
def _deferred_interrupt():
    """Turn Ctrl-C / SIGTERM into a flag, so the loop can checkpoint before it exits."""
    caught: list[int] = []

    def handler(signum, frame):
        caught.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train(config: TrainConfig, stop_after: int | None = None) -> dict | None:
    """Run (or resume) training; returns the summary, or None if stopped before the end.

    ``stop_after`` ends the run early at that step with a checkpoint, as an interruption would.
    """
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a directory")
    if config.resume:
        state = load_checkpoint(run_dir)  # on the CPU; loading copies onto the device
        missing = CHECKPOINT_KEYS - set(state)
        if missing:
            raise CheckpointError(f"{run_dir}/checkpoint.pt lacks {sorted(missing)}; cannot resume")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    agent = build_agent(config)
    seeds = member_seeds(config)
    obs_dim, act_dim = agent.actor.sizes[0], agent.act_dim
    buffer = ReplayBuffer(
        config.seeds, min(config.buffer_size, config.steps), obs_dim, act_dim, agent.device
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_json(), indent=2))

    envs = make_vector_env(config.env, config.seeds)
    eval_envs = make_vector_env(config.env, config.seeds)
    obs, _ = envs.reset(seed=seeds)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    step, wall, flops_so_far, eval_round = 0, 0.0, 0, 0
    learning_wall, learning_steps = 0.0, 0  # time and steps after warm-up, evaluation excluded
    history: list[np.ndarray] = []
    evaluations = CsvLog(run_dir / "evaluations.csv", EVAL_FIELDS)
    layer_names = _layer_names(agent)
    metrics = CsvLog(
        run_dir / "train_metrics.csv",
        ["step", *agent.loss_names, "flops", *layer_names, "connections_changed"],
    )
    changed = 0
    if config.resume:
        try:
            agent.load_state_dict(state["agent"])
            buffer.load_state_dict(state["buffer"])
            for env, env_state in zip(envs.envs, state["envs"], strict=True):
                set_env_state(env, env_state)
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"{run_dir}/checkpoint.pt does not fit the run's config.json ({error})"
            ) from error
        obs = state["obs"]
        step, wall, flops_so_far = state["step"], state["wall_seconds"], state["flops"]
        learning_wall, learning_steps = state["learning_wall"], state["learning_steps"]
        history = [np.asarray(h) for h in state["history"]]
        changed = state["changed"]
        if step == state["steps_planned"] < config.steps and step % config.eval_every:
            history.pop()  # an extended run: its old end-of-run evaluation is off the grid
            evaluations.truncate_after(step - 1)
        eval_round = len(history)
        evaluations.truncate_after(step)
        metrics.truncate_after(step)

    cost = agent.cost()
    board = TensorBoard(run_dir / "tensorboard" if config.tensorboard else None, purge_step=step)
    bar = tqdm(
        total=config.steps,
        initial=step,
        disable=not config.progress,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        desc=f"{config.algo} {config.env}",
    )

    def checkpoint() -> None:
        save_checkpoint(
            {
                "agent": agent.state_dict(),
                "buffer": buffer.state_dict(),
                "envs": [get_env_state(env) for env in envs.envs],
                "obs": obs,
                "step": step,
                "wall_seconds": wall + time.perf_counter() - started,
                "flops": flops_so_far,
                "learning_wall": learning_wall,
                "learning_steps": learning_steps,
                "history": [h.tolist() for h in history],
                "changed": changed,
                "steps_planned": config.steps,
            },
            run_dir,
        )

    started = time.perf_counter()
    end = config.steps if stop_after is None else min(stop_after, config.steps)
    generator = agent.generator
    with _deferred_interrupt() as interrupted:
        while step < end and not interrupted:
            tick = time.perf_counter()
            # act
            if step < config.start_steps:
                u = torch.rand(
                    (config.seeds, low.size), generator=generator, device=generator.device
                )
                action = low + u.cpu().numpy() * (high - low)
            else:
                action = agent.act(obs, explore=True)
                flops_so_far += cost["inference_flops"] * config.seeds
            # step and store (the true final observation of an episode, for bootstrapping)
            next_obs, reward, terminated, truncated, info = envs.step(action)
            stored_next = next_obs
            done = terminated | truncated
            if done.any():
                stored_next = next_obs.copy()
                stored_next[done] = np.stack(info["final_obs"][done])
            buffer.add(obs, action, reward, stored_next, terminated)
            obs = next_obs
            step += 1
            # learn
            if step > config.start_steps:
                agent.update(*buffer.sample(config.agent.batch_size, generator))
                flops_so_far += cost["train_flops"] * config.seeds
                if agent.last_topology_change is not None:
                    change = agent.last_topology_change
                    changed += sum(change["actor"]) + sum(change["critic"])
                    cost = agent.cost()  # pruning changes the connection count
                learning_wall += time.perf_counter() - tick
                learning_steps += 1
            # log
            if step % config.log_every == 0:
                row = {"step": step, "flops": flops_so_far, "connections_changed": changed}
                row.update(agent.pop_losses())
                row.update(zip(layer_names, _layer_densities(agent), strict=True))
                metrics.write([row])
                board.scalars({f"train/{k}": v for k, v in row.items() if k != "step"}, step)
                changed = 0
            if step % config.eval_every == 0 or step == config.steps:
                returns = evaluate(
                    lambda o: agent.act(o, explore=False),
                    eval_envs,
                    config.eval_episodes,
                    seeds,
                    eval_round,
                )
                eval_round += 1
                history.append(returns)
                evaluations.write(
                    [
                        {"step": step, "member": i, "seed": s, "return": float(r)}
                        for i, (s, r) in enumerate(zip(seeds, returns, strict=True))
                    ]
                )
                board.scalars({"eval/return_mean": float(returns.mean())}, step)
                bar.set_postfix(eval_return=f"{returns.mean():.1f}", refresh=False)
            if step % config.checkpoint_every == 0:
                checkpoint()
            bar.update(1)
        if step % config.checkpoint_every:
            checkpoint()
    bar.close()
    board.close()
    wall += time.perf_counter() - started
    envs.close()
    eval_envs.close()
    if step < config.steps:
        print(f"stopped at step {step:,}; continue with: dstrl train --out {run_dir} --resume")
        return None
    summary = _summary(config, agent, seeds, history, wall, flops_so_far)
    summary["learning_steps_per_second"] = (
        learning_steps * config.seeds / learning_wall if learning_wall else None
    )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _layer_names(agent: ActorCritic) -> list[str]:
    names = []
    for net_name, layers in (("actor", agent.actor_sparse), ("critic", agent.critic_sparse)):
        if layers is not None:
            names += [f"density/{net_name}{i}" for i in layers.indices]
    return names


def _layer_densities(agent: ActorCritic) -> list[float]:
    return [
        d
        for layers in (agent.actor_sparse, agent.critic_sparse)
        if layers is not None
        for d in layers.densities()
    ]


def _summary(
    config: TrainConfig,
    agent: ActorCritic,
    seeds: list[int],
    history: list[np.ndarray],
    wall: float,
    flops_so_far: int,
) -> dict:
    curves = np.stack(history, axis=1)  # (members, evaluations)
    sparse, dense = agent.cost(), agent.cost(dense=True)
    learning_steps = max(config.steps - config.start_steps, 0)
    dense_run = config.seeds * (
        dense["train_flops"] * learning_steps + dense["inference_flops"] * learning_steps
    )
    return {
        "algo": config.algo,
        "env": config.env,
        "steps": config.steps,
        "seeds": seeds,
        "evaluations": curves.shape[1],
        "final_return": mean_std([final_return(c) for c in curves]),
        "lca": mean_std([learning_curve_area(c) for c in curves]),
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
            "run_total": flops_so_far,
            "dense_run_total": dense_run,
            "train_ratio": sparse["train_flops"] / dense["train_flops"],
            "run_ratio": flops_so_far / dense_run if dense_run else None,
        },
        "layer_density": dict(zip(_layer_names(agent), _layer_densities(agent), strict=True)),
        "wall_seconds": wall,
        "env_steps_per_second": config.steps * config.seeds / wall,
    }
