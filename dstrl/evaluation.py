"""Deterministic-policy evaluation of every member on its own evaluation environment."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

EVAL_SEED_OFFSET = 1_000_000
SEED_STRIDE = 10_007  # episodes an agent's seed covers before the next agent's
BLOCK = 1 << 48  # each further SEED_STRIDE episodes, far above every agent's first block


def episode_seeds(seeds: list[int], episode: int) -> list[int]:
    """The reset seed of each member's ``episode``-th evaluation episode: distinct for distinct
    (seed, episode), also past SEED_STRIDE episodes (an evaluation every 500 of 1M steps, at
    ten episodes), where member s's episodes ran into member s + 1's."""
    block, within = divmod(episode, SEED_STRIDE)
    return [EVAL_SEED_OFFSET + SEED_STRIDE * s + within + block * BLOCK for s in seeds]


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
        obs, _ = env.reset(seed=episode_seeds(seeds, round_index * episodes + k))
        running = np.ones(members, dtype=bool)
        while running.any():
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            totals[:, k] += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
    return totals.mean(axis=1)
