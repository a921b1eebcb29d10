"""Deterministic-policy evaluation of every member on its own evaluation environment."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

EVAL_SEED_OFFSET = 1_000_000


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env: gym.vector.VectorEnv,
    episodes: int,
    seeds: list[int],
    round_index: int,
) -> np.ndarray:
    """Mean undiscounted return over ``episodes`` episodes per member, shape (members,).

    Episode k of evaluation round r resets member i's environment with a seed derived from
    (seeds[i], r, k), so an evaluation depends only on the policy: a resumed run evaluates
    exactly like one that was never stopped.
    """
    members = len(seeds)
    totals = np.zeros((members, episodes))
    for k in range(episodes):
        episode = round_index * episodes + k
        obs, _ = env.reset(seed=[EVAL_SEED_OFFSET + 10_007 * s + episode for s in seeds])
        running = np.ones(members, dtype=bool)
        while running.any():
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            totals[:, k] += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
    return totals.mean(axis=1)
