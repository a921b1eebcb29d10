"""A user's own environments, registered when this module is imported (``--env
tests.custom_envs:dstrl-test/Drift-v0``): state kept in a list, no time limit, a wrapper with
running statistics, an attribute that is an object, a namedtuple or an IntEnum, a MuJoCo task
with a goal of its own."""

from collections import namedtuple
from enum import IntEnum

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv


class Drift(gym.Env):
    """Keep the sum of the last three pushes, which drift at random, near zero."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), dtype=np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), dtype=np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pushes = [float(x) for x in self.np_random.normal(size=3)]  # a list: its state
        return self._obs(), {}

    def step(self, action):
        push = float(action[0]) + 0.3 * float(self.np_random.normal())
        self.pushes = [*self.pushes[1:], push]
        return self._obs(), -abs(sum(self.pushes)), False, False, {}

    def _obs(self):
        return np.array(self.pushes, dtype=np.float32)


class Counter:
    """An object no checkpoint keeps."""

    def __init__(self) -> None:
        self.steps = 0


class Counted(Drift):
    def reset(self, seed=None, options=None):
        self.counter = Counter()
        return super().reset(seed=seed)


Pushes = namedtuple("Pushes", "first second third")


class Named(Drift):
    """Its state in a namedtuple, which a checkpoint does not keep."""

    def step(self, action):
        result = super().step(action)
        self.named = Pushes(*self.pushes)
        return result


class Mode(IntEnum):
    LEFT = 0
    RIGHT = 1


class Moded(Drift):
    """An IntEnum attribute: an int to ``isinstance``, but pickled as its class."""

    def step(self, action):
        self.mode = Mode.RIGHT if action[0] > 0 else Mode.LEFT
        return super().step(action)


class GoalCheetah(HalfCheetahEnv):
    """HalfCheetah rewarded for its distance to a goal drawn at each reset."""

    def reset_model(self):
        self.goal = float(self.np_random.uniform(-5, 5))
        return super().reset_model()

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, -abs(self.data.qpos[0] - self.goal), terminated, truncated, info


gym.register("dstrl-test/Drift-v0", entry_point=Drift, max_episode_steps=50)
gym.register("dstrl-test/Named-v0", entry_point=Named, max_episode_steps=50)
gym.register("dstrl-test/Moded-v0", entry_point=Moded, max_episode_steps=50)
gym.register("dstrl-test/GoalCheetah-v0", entry_point=GoalCheetah, max_episode_steps=100)
gym.register("dstrl-test/Endless-v0", entry_point=Drift)  # no max_episode_steps
gym.register(
    "dstrl-test/Normalized-v0",
    entry_point=lambda: gym.wrappers.NormalizeObservation(Drift()),
    max_episode_steps=50,
)
gym.register("dstrl-test/Counted-v0", entry_point=Counted, max_episode_steps=50)
