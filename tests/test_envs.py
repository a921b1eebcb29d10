import numpy as np
import pytest

from dstrl.data.envs import EnvError, check_env, get_env_state, make_vector_env, set_env_state


def test_check_env_reports_sizes_and_bounds():
    obs_dim, low, high = check_env("Pendulum-v1")
    assert obs_dim == 3 and low.tolist() == [-2.0] and high.tolist() == [2.0]


def test_unknown_env_suggests_names():
    with pytest.raises(EnvError, match="unknown environment 'HalfCheetah-v9'.*HalfCheetah-v5"):
        check_env("HalfCheetah-v9")


def test_discrete_actions_are_rejected():
    with pytest.raises(EnvError, match="Discrete action space"):
        check_env("CartPole-v1")


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Pendulum-v1"])
def test_snapshot_restores_an_episode_exactly(env_id):
    env = make_vector_env(env_id, 2)
    env.reset(seed=[1, 2])
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(40, 2, env.single_action_space.shape[0]))
    for a in actions[:15]:
        env.step(a)
    states = [get_env_state(e) for e in env.envs]
    expected = [env.step(a)[0] for a in actions[15:]]
    copy = make_vector_env(env_id, 2)
    copy.reset(seed=[7, 8])
    for e, s in zip(copy.envs, states, strict=True):
        set_env_state(e, s)
    got = [copy.step(a)[0] for a in actions[15:]]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
