"""Gymnasium environments for a population: construction, validation, seeding, snapshots."""

from __future__ import annotations

import functools
import importlib
import sys
import warnings

import gymnasium as gym
import numpy as np
import torch

from dstrl.data.workers import BlockVectorEnv

# Gymnasium's own HalfCheetah model sets its total mass through a deprecated compiler attribute;
# MuJoCo warns on every load but still applies it (the model weighs 14 as before)
HARMLESS_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


class EnvError(ValueError):
    """The requested environment cannot be used (unknown id, unsupported spaces)."""


class MujocoWarning(UserWarning):
    """A warning from MuJoCo's C library, shown once per message."""


def _mujoco_warning(message: str) -> None:
    """Called from MuJoCo's C code, which an exception must not cross: one there aborts the
    process. Warnings made errors (``-W error``, pytest's ``filterwarnings = error``) are
    printed instead, as MuJoCo prints them."""
    if not message.startswith(HARMLESS_MUJOCO_WARNINGS):
        try:
            warnings.warn(f"MuJoCo: {message}", MujocoWarning, stacklevel=2)
        except Exception:
            print(f"MuJoCo warning: {message}", file=sys.stderr, flush=True)


@functools.cache
def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings through Python's, once per message, leaving out the harmless ones.

    MuJoCo prints each warning and appends it to MUJOCO_LOG.TXT in the working directory, once
    per environment: a run of 33 agents printed one deprecation 67 times and left the log file
    behind. Called before any environment is made, in every process that makes one.
    """
    try:
        import mujoco
    except ImportError:  # no MuJoCo tasks here, nothing to route
        return
    mujoco.set_mju_user_warning(_mujoco_warning)


def _import_module_of(env_id: str) -> str:
    """The registry id of ``env_id``, after importing the module of a ``module:id`` (one that
    registers the user's own environments, as ``gym.make`` takes it)."""
    module, colon, name = env_id.rpartition(":")
    if not colon:
        return env_id
    try:
        importlib.import_module(module)
    except Exception as error:  # an ImportError, or the module's own failure
        raise EnvError(
            f"cannot import {module!r}, the module of {env_id!r} ({type(error).__name__}: "
            f"{error}); it must be importable here (on PYTHONPATH, or installed)"
        ) from error
    return name


def check_env(env_id: str, trusted: bool = True) -> tuple[int, np.ndarray, np.ndarray]:
    """Validate ``env_id`` (a Gymnasium id, or ``module:id`` to import the module that
    registers it first: only if ``trusted``, the id not read from a file that came from
    elsewhere, such as a policy file); return (observation size, action low, action high)."""
    if not trusted and ":" in env_id:
        raise EnvError(
            f"unknown environment {env_id!r}: an id read from a file may not name a module to "
            "import (its code would run); import the module yourself and use dstrl.load_policy"
        )
    name = _import_module_of(env_id)
    if name not in gym.registry:
        task = name.lower().split("-")[0]
        close = [name for name in gym.registry if task in name.lower()]
        # the task itself first, newest version first (Pendulum-v1 for pendulum-v0), then others
        same = sorted((n for n in close if n.lower().split("-")[0] == task), reverse=True)
        close = same + sorted(n for n in close if n not in same)
        hint = (
            f" Did you mean {', '.join(close[:4])}?"
            if close
            else " Give a Gymnasium id of a task with continuous actions, e.g. HalfCheetah-v5."
        )
        raise EnvError(f"unknown environment {env_id!r}.{hint}")
    route_mujoco_warnings()
    try:
        env = gym.make(env_id)
    except Exception as error:  # missing extras such as mujoco surface here
        raise EnvError(f"cannot create {env_id!r}: {error}") from error
    try:
        obs_space, act_space = env.observation_space, env.action_space
        limited = bool(_time_limits(env))
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Box):
        raise EnvError(
            f"{env_id} has a {type(act_space).__name__} action space; dstrl's agents need a "
            "continuous (Box) action space"
        )
    if len(act_space.shape) != 1 or act_space.shape[0] == 0:
        raise EnvError(
            f"{env_id} needs a flat Box action space of one or more actions, got {act_space}"
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise EnvError(f"{env_id} needs a flat Box observation space, got {obs_space}")
    if obs_space.shape[0] == 0:
        raise EnvError(f"{env_id} has empty observations ({obs_space}); dstrl needs at least one")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise EnvError(f"{env_id} has an unbounded action space; dstrl needs finite bounds")
    with np.errstate(over="ignore"):
        span = act_space.high.astype(np.float32) - act_space.low.astype(np.float32)
    if not np.all(np.isfinite(span)):
        raise EnvError(
            f"{env_id}'s action bounds [{act_space.low}, {act_space.high}] span no finite float32 "
            "range; dstrl scales actions to them"
        )
    if not limited:
        raise EnvError(
            f"{env_id} has no time limit, so an episode that never ends would hold an "
            "evaluation forever: register it with max_episode_steps (gymnasium.register(..., "
            "max_episode_steps=1000))"
        )
    return obs_space.shape[0], act_space.low.astype(np.float32), act_space.high.astype(np.float32)


class Snapshots(gym.Wrapper):
    """An environment whose exact state can be read and restored through a vector env's
    attribute calls, which reach it in this process or in a worker process alike."""

    @property
    def snapshot(self) -> dict:
        return get_env_state(self.env)

    @snapshot.setter
    def snapshot(self, state: dict) -> None:
        set_env_state(self.env, state)


def _make(env_id: str) -> Snapshots:
    route_mujoco_warnings()  # in a worker process too
    return Snapshots(gym.make(env_id))


def make_vector_env(env_id: str, members: int, workers: int = 0) -> gym.vector.VectorEnv:
    """One environment per member, reset in the same step that ends an episode; stepped one
    after another in this process, or by ``workers`` worker processes, each stepping a block of
    them (``BlockVectorEnv``). Either way a run is the same.

    With same-step autoreset, ``info["final_obs"]`` holds the true last observation of a finished
    episode, which is what must be stored (and bootstrapped from, after a truncation).
    """
    makers = [functools.partial(_make, env_id) for _ in range(members)]
    if workers:
        return BlockVectorEnv(makers, workers)
    return gym.vector.SyncVectorEnv(makers, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class SplitStep:
    """A vector env's step in two halves, so that other work (a queued update) runs between
    them: worker processes start stepping at ``send``; environments in this process step at
    ``receive``. ``send`` then ``receive`` is exactly ``envs.step``."""

    def __init__(self, envs: gym.vector.VectorEnv) -> None:
        self.envs = envs
        self.workers = hasattr(envs, "step_async")
        self.actions: np.ndarray | None = None

    def send(self, actions: np.ndarray) -> None:
        if self.workers:
            self.envs.step_async(actions)
        else:
            self.actions = actions

    def receive(self) -> tuple:
        """``envs.step``'s (observations, rewards, terminations, truncations, infos)."""
        if self.workers:
            return self.envs.step_wait()
        actions, self.actions = self.actions, None
        return self.envs.step(actions)


def env_states(envs: gym.vector.VectorEnv) -> list[dict]:
    """Each environment's state (``get_env_state``), wherever it runs."""
    return list(envs.get_attr("snapshot"))


def restore_env_states(envs: gym.vector.VectorEnv, states: list[dict]) -> None:
    """Inverse of ``env_states``."""
    if len(states) != envs.num_envs:
        raise ValueError(f"{len(states)} environment states for {envs.num_envs} environments")
    envs.set_attr("snapshot", list(states))


def _time_limits(env: gym.Env) -> list[gym.Env]:
    found = []
    while isinstance(env, gym.Wrapper):
        if hasattr(env, "_elapsed_steps"):
            found.append(env)
        env = env.env
    return found


# What MuJoCo derives from the state in a step, which a task may read before the next one (Ant's
# and Humanoid's rewards take the distance from the body positions of the last step): kept with
# the state, since recomputing them from it would not give the last step's values.
DERIVED = (
    "xpos", "xquat", "xmat", "xipos", "ximat", "xanchor", "xaxis", "geom_xpos", "geom_xmat",
    "site_xpos", "site_xmat", "subtree_com", "cinert", "cdof", "cvel", "cdof_dot", "cacc",
    "cfrc_int", "cfrc_ext", "actuator_length", "actuator_velocity", "actuator_force",
    "ten_length", "qfrc_bias", "qfrc_passive", "qfrc_actuator", "qfrc_constraint", "sensordata",
)  # fmt: skip


def get_env_state(env: gym.Env) -> dict:
    """Everything needed to continue ``env`` exactly, as plain data (tensors, numbers, strings):
    physics, wrapper counters, RNG, and the unwrapped environment's attributes that are numbers,
    arrays, or lists, tuples and dicts of them (``unsaved_state`` names the others)."""
    base = env.unwrapped
    state: dict = {
        "elapsed": [w._elapsed_steps for w in _time_limits(env)],
        "rng": base.np_random.bit_generator.state,  # a dict of strings and integers
    }
    if hasattr(base, "model") and hasattr(base, "data"):  # a MuJoCo environment
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(base.model, spec))
        mujoco.mj_getState(base.model, base.data, physics, spec)
        state["mujoco"] = torch.from_numpy(physics)
        data = base.data
        state["mujoco_derived"] = {
            name: torch.from_numpy(getattr(data, name).copy()) for name in DERIVED
        }
    # the environment's own numbers (a classic-control state, a MuJoCo task's target)
    plain = {key: _plain(value) for key, value in vars(base).items() if key not in NOT_STATE}
    state["attributes"] = {
        key: value
        for key, value in plain.items()
        if value is not None and not key.startswith("_np_random")
    }
    return state


def _plain(value):
    """A numeric attribute as plain data (arrays and NumPy scalars as tensors; lists, tuples
    and dicts of such), else None."""
    if type(value) in (bool, int, float, str):  # exactly: an IntEnum would be pickled
        return value
    if isinstance(value, np.ndarray | np.generic) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.array(value))
    if type(value) in (list, tuple):  # exactly: a namedtuple or a subclass is not plain
        items = [_plain(item) for item in value]
        plain = all(p is not None or v is None for p, v in zip(items, value, strict=True))
        return type(value)(items) if plain else None
    if type(value) is dict and all(isinstance(key, str | int) for key in value):
        items = {key: _plain(item) for key, item in value.items()}
        plain = all(items[k] is not None or v is None for k, v in value.items())
        return items if plain else None
    return None


def _unplain(value):
    """Inverse of ``_plain``: tensors back to the arrays or NumPy scalars they were."""
    if isinstance(value, torch.Tensor):
        return value.numpy().copy() if value.dim() else value.numpy()[()]
    if isinstance(value, list | tuple):
        return type(value)(_unplain(item) for item in value)
    if isinstance(value, dict):
        return {key: _unplain(item) for key, item in value.items()}
    return value


# Gymnasium's wrappers that keep nothing a checkpoint needs: ``gym.make``'s own (whether the
# environment was reset, checks done once; the time limit's counter is kept), and those that
# only transform what passes through them
STATELESS_WRAPPERS = (
    "OrderEnforcing", "PassiveEnvChecker", "Snapshots", "TimeLimit", "RescaleAction",
    "ClipAction", "TransformAction", "TransformObservation", "TransformReward",
    "RescaleObservation", "DtypeObservation", "FlattenObservation", "ClipReward",
    "ReshapeObservation", "FilterObservation",
)  # fmt: skip
# attributes of an environment that are not its state (MuJoCo's physics is kept apart)
NOT_STATE = (
    "spec", "metadata", "render_mode", "action_space", "observation_space", "model", "data",
    "mujoco_renderer",
)  # fmt: skip


def unsaved_state(env_id: str) -> list[str]:
    """What of ``env_id``'s state a checkpoint cannot keep, so that a resumed run would not
    continue exactly: attributes of a Python environment that are not numbers, arrays or
    containers of them, and wrappers with state of their own (running statistics, say)."""
    route_mujoco_warnings()
    env = gym.make(env_id)
    try:
        env.reset(seed=0)
        env.step(env.action_space.sample())
        unsaved, inner = [], env
        while isinstance(inner, gym.Wrapper):
            if type(inner).__name__ not in STATELESS_WRAPPERS:
                unsaved.append(f"its wrapper {type(inner).__name__}")
            inner = inner.env
        unsaved += [
            f"its attribute {key!r} ({type(value).__name__})"
            for key, value in vars(env.unwrapped).items()
            if value is not None
            and key not in NOT_STATE
            and not key.startswith("_np_random")
            and not isinstance(value, gym.Space)
            and _plain(value) is None
        ]
        return unsaved
    finally:
        env.close()


def set_env_state(env: gym.Env, state: dict) -> None:
    """Inverse of ``get_env_state``."""
    base = env.unwrapped
    for wrapper, elapsed in zip(_time_limits(env), state["elapsed"], strict=True):
        wrapper._elapsed_steps = elapsed
    base.np_random.bit_generator.state = state["rng"]
    if "mujoco" in state:
        import mujoco

        physics = np.asarray(state["mujoco"], dtype=np.float64)
        mujoco.mj_setState(base.model, base.data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        for name, value in state.get("mujoco_derived", {}).items():  # none in older checkpoints
            getattr(base.data, name)[...] = np.asarray(value)
    for key, value in state.get("attributes", {}).items():  # a MuJoCo task's: none before
        setattr(base, key, _unplain(value))
