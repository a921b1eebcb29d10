import numpy as np
import pytest

from dstrl.data.envs import EnvError, check_env, env_states, make_vector_env, restore_env_states


def test_check_env_reports_sizes_and_bounds():
    obs_dim, low, high = check_env("Pendulum-v1")
    assert obs_dim == 3 and low.tolist() == [-2.0] and high.tolist() == [2.0]


def test_unknown_env_suggests_names():
    with pytest.raises(EnvError, match="unknown environment 'HalfCheetah-v9'.*HalfCheetah-v5"):
        check_env("HalfCheetah-v9")


def test_discrete_actions_are_rejected():
    with pytest.raises(EnvError, match="Discrete action space"):
        check_env("CartPole-v1")


@pytest.mark.parametrize(
    ("env_id", "parallel"), [("Hopper-v5", False), ("Pendulum-v1", False), ("Hopper-v5", True)]
)
def test_snapshot_restores_an_episode_exactly(env_id, parallel):
    """A state read from one vector env (in this process or in worker processes) continues
    exactly in another of the other kind."""
    env = make_vector_env(env_id, 2, parallel)
    env.reset(seed=[1, 2])
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(40, 2, env.single_action_space.shape[0]))
    for a in actions[:15]:
        env.step(a)
    states = env_states(env)
    expected = [env.step(a)[:4] for a in actions[15:]]
    copy = make_vector_env(env_id, 2, not parallel)
    copy.reset(seed=[7, 8])
    restore_env_states(copy, states)
    got = [copy.step(a)[:4] for a in actions[15:]]
    env.close()
    copy.close()
    for a, b in zip(expected, got, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
