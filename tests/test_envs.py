import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

from dstrl.data.envs import EnvError, check_env, env_states, make_vector_env, restore_env_states
from dstrl.data.workers import BlockVectorEnv
from dstrl.errors import WorkerError


def test_check_env_reports_sizes_and_bounds():
    obs_dim, low, high = check_env("Pendulum-v1")
    assert obs_dim == 3 and low.tolist() == [-2.0] and high.tolist() == [2.0]


def test_unknown_env_suggests_names():
    with pytest.raises(EnvError, match="unknown environment 'HalfCheetah-v9'.*HalfCheetah-v5"):
        check_env("HalfCheetah-v9")
    # the task itself first: four InvertedDoublePendulum versions came first, and cut it off
    with pytest.raises(EnvError, match=r"'Pendulum-v0'. Did you mean Pendulum-v1, "):
        check_env("Pendulum-v0")


MUJOCO_WARNINGS = """
import mujoco
from dstrl.data.envs import check_env, make_vector_env
check_env("HalfCheetah-v5")
for workers in (0, 2):
    make_vector_env("HalfCheetah-v5", 3, workers).close()
routed = mujoco.get_mju_user_warning()
for _ in range(3):  # as for the environments of a population: one place loads them all
    routed("a model that MuJoCo warns about")
"""


def test_mujoco_warnings_come_once_and_leave_no_log_file(tmp_path):
    """HalfCheetah's harmless deprecation, printed once per environment, is left out, in worker
    processes too; other MuJoCo warnings come once, and nothing is written to the cwd."""
    done = subprocess.run(
        [sys.executable, "-c", MUJOCO_WARNINGS], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "settotalmass" not in output
    assert output.count("MujocoWarning: MuJoCo: a model that MuJoCo warns about") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unstable_simulation_with_warnings_made_errors_is_no_abort():
    """MuJoCo's instability warning, raised as an error by the callback inside MuJoCo's C
    code, aborted the process (libc++abi: terminating, exit code 134)."""
    unstable = (
        "import mujoco\n"
        "from dstrl.data.envs import route_mujoco_warnings\n"
        "route_mujoco_warnings()\n"
        "body = \"<body><joint type='free'/><geom size='.1'/></body>\"\n"
        "xml = f'<mujoco><worldbody>{body}</worldbody></mujoco>'\n"
        "model = mujoco.MjModel.from_xml_string(xml)\n"
        "data = mujoco.MjData(model)\n"
        "data.qvel[:] = 1e300\n"
        "mujoco.mj_step(model, data)\n"
        "print('stepped')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", unstable], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stepped\n"
    assert "MuJoCo warning: Nan, Inf or huge value in QVEL at DOF 0" in done.stderr


def test_discrete_actions_are_rejected():
    with pytest.raises(EnvError, match="Discrete action space"):
        check_env("CartPole-v1")


class _Shaped(gym.Env):
    """A task with the given spaces, for check_env."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space


@pytest.mark.parametrize(
    ("observation", "action", "error"),
    [
        ((3,), (2, 2), "needs a flat Box action space of one or more actions"),
        ((3,), (0,), "needs a flat Box action space of one or more actions"),
        ((3,), (), "needs a flat Box action space of one or more actions"),
        ((0,), (2,), "has empty observations"),
        ((3,), "huge", "span no finite float32 range"),
    ],
)
def test_spaces_dstrl_cannot_train_on_are_refused_by_name(observation, action, error):
    """A (2, 2) action was a broadcasting error in the loop, an empty observation a division by
    zero, no action at all trained silently, and bounds of ±3e38 (a span past float32)
    "diverged"."""
    if action == "huge":
        actions = gym.spaces.Box(-3e38, 3e38, (2,), dtype=np.float32)
    else:
        actions = gym.spaces.Box(-1, 1, action, dtype=np.float32)
    observations = gym.spaces.Box(-1, 1, observation, dtype=np.float32)
    gym.register("Shaped-v0", entry_point=lambda: _Shaped(observations, actions))
    try:
        with pytest.raises(EnvError, match=f"^Shaped-v0.*{error}"):
            check_env("Shaped-v0")
    finally:
        del gym.registry["Shaped-v0"]


@pytest.mark.parametrize(
    ("env_id", "workers"),
    [
        ("Hopper-v5", 0),
        ("Pendulum-v1", 0),
        ("Hopper-v5", 2),
        ("Ant-v5", 0),
        ("Humanoid-v5", 0),
        ("Reacher-v5", 0),
        ("Pusher-v5", 0),
    ],
)
def test_snapshot_restores_an_episode_exactly(env_id, workers):
    """A state read from one vector env (in this process or in worker processes) continues
    exactly in another of the other kind. Ant and Humanoid reward the distance their body
    moved, measured from positions MuJoCo derived in the last step: restoring only the
    integration state gave the first step after a resume the distance from the copy's reset."""
    env = make_vector_env(env_id, 2, workers)
    env.reset(seed=[1, 2])
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(40, 2, env.single_action_space.shape[0]))
    for a in actions[:15]:
        env.step(a)
    states = env_states(env)
    expected = [env.step(a)[:4] for a in actions[15:]]
    copy = make_vector_env(env_id, 2, 0 if workers else 2)
    copy.reset(seed=[7, 8])
    restore_env_states(copy, states)
    got = [copy.step(a)[:4] for a in actions[15:]]
    env.close()
    copy.close()
    for a, b in zip(expected, got, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_blocks_of_environments_in_workers_step_as_in_this_process(workers):
    """Five Hopper-v5 (random actions end episodes early) in blocks of uneven size: the same
    observations, rewards, terminations, truncations and final observations, split or whole
    steps, as stepping them in this process."""
    here, there = make_vector_env("Hopper-v5", 5), make_vector_env("Hopper-v5", 5, workers)
    assert there.workers == workers
    seeds = [3, 1, 4, 1, 5]
    for a, b in zip(here.reset(seed=seeds)[0], there.reset(seed=seeds)[0], strict=True):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(1)
    ended = 0
    for t in range(150):
        action = rng.uniform(-1, 1, size=(5, 3)).astype(np.float32)
        expected = here.step(action)
        if t % 2:
            got = there.step(action)
        else:
            there.step_async(action)
            got = there.step_wait()
        for x, y in zip(expected[:4], got[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        done = expected[2] | expected[3]
        ended += done.sum()
        if done.any():
            np.testing.assert_array_equal(
                np.stack(expected[4]["final_obs"][done]), np.stack(got[4]["final_obs"][done])
            )
        else:
            assert "final_obs" not in got[4]
    here.close()
    there.close()
    assert ended >= 5


class _Failing(gym.Env):
    """Fails on its third step."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps == 3:
            raise ValueError("the simulator blew up")
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_a_failing_or_dead_worker_is_reported_in_one_line():
    """Workers leave Ctrl-C and SIGTERM to the training process, which still needs them to
    checkpoint; an environment's error, or a worker killed, is one line."""
    envs = BlockVectorEnv([_Failing] * 4, 2)
    envs.reset(seed=0)
    for process in envs._processes:
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGTERM)
    for _ in range(2):
        envs.step(np.zeros((4, 1), np.float32))
    with pytest.raises(WorkerError, match=r"ValueError\('the simulator blew up'\) at .*") as caught:
        envs.step(np.zeros((4, 1), np.float32))
    assert "\n" not in str(caught.value)
    envs.close()
    envs = BlockVectorEnv([_Failing] * 4, 2)
    envs.reset(seed=0)
    envs._processes[1].kill()
    envs._processes[1].join()
    with pytest.raises(WorkerError, match="dstrl-envs-2-3: its process ended"):
        envs.step(np.zeros((4, 1), np.float32))
    envs.close()
    assert not any(p.is_alive() for p in envs._processes)


def test_a_worker_killed_with_a_message_unread_is_reported_as_a_worker(tmp_path):
    """Its socket is reset rather than closed (ConnectionResetError, an OSError): still the
    worker's failure, not one of writing the run directory."""
    envs = BlockVectorEnv([_Failing] * 4, 2)
    try:
        envs.reset(seed=0)
        victim = envs._processes[0]
        os.kill(victim.pid, signal.SIGSTOP)
        envs.step_async(np.zeros((4, 1), np.float32))  # its step command waits, unread
        victim.kill()
        victim.join()
        expected = r"dstrl-envs-0-1: its process ended \(exit code -9\)"
        with pytest.raises(WorkerError, match=expected):
            envs.step_wait()
    finally:  # whatever happens, the other worker ends
        envs.close()


def test_a_silent_worker_ends_the_wait_and_is_killed_on_close():
    """A hung (here stopped) worker used to block the run for ever, SIGTERM included: now it
    is a WorkerError after the timeout, and closing kills it."""
    envs = BlockVectorEnv([_Failing] * 4, 2, timeout=1.0)
    try:
        envs.reset(seed=0)
        victim = envs._processes[0]
        os.kill(victim.pid, signal.SIGSTOP)
        began = time.monotonic()
        with pytest.raises(WorkerError) as caught:
            envs.step(np.zeros((4, 1), np.float32))
        assert 1.0 <= time.monotonic() - began < 3.0
        assert str(caught.value) == (
            "environment worker dstrl-envs-0-1: no answer for 1 s (stopped, or stuck in its "
            "environment)"
        )
    finally:
        began = time.monotonic()
        envs.close()
    assert time.monotonic() - began < 7.0 and not victim.is_alive()
    assert not envs._processes[1].is_alive()


def test_a_training_run_whose_environment_fails_in_a_worker_ends_in_one_line(tmp_path, capsys):
    from dstrl.cli import main

    gym.register("dstrl-test/Failing-v0", entry_point=_Failing, max_episode_steps=50)
    try:
        args = ["train", "--env", "dstrl-test/Failing-v0", "--out", str(tmp_path / "run")]
        args += ["--vector-env", "async", "--steps", "20", "--start-steps", "10"]
        assert main([*args, "--no-progress"]) == 1
    finally:
        gym.registry.pop("dstrl-test/Failing-v0")
    lines = capsys.readouterr().err.strip().splitlines()
    err = "\n".join(line for line in lines if not line.startswith("dstrl: note: "))  # tiny run's
    assert err.startswith("dstrl: error: environment worker dstrl-envs-0-0: ValueError(")
    assert err.endswith(
        "no checkpoint had been written yet: once this is fixed, start the run again with "
        "--auto-resume (it clears what this attempt left)"
    )
    assert err.count("\n") == 0


def test_evaluation_episodes_of_different_agents_never_share_a_reset_seed():
    """Member s's episode 10,007 + k took member s + 1's episode k's seed: with an evaluation
    every 500 of 1M steps at ten episodes (20,000 episodes), agents' evaluations overlapped."""
    from dstrl.evaluation import episode_seeds

    seeds = [0, 1, 2, 2**32 - 1]
    used = {}
    for episode in [*range(0, 30_000, 7), 10_006, 10_007, 20_014, 10**7]:
        for seed, reset in zip(seeds, episode_seeds(seeds, episode), strict=True):
            assert used.setdefault(reset, (seed, episode)) == (seed, episode)
    # the first 10,007 episodes keep the seeds every earlier run was evaluated with
    assert episode_seeds([0, 3], 10_006) == [1_000_000 + 10_006, 1_000_000 + 3 * 10_007 + 10_006]


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="reads Linux's /proc")
def test_environment_workers_hold_no_copy_of_the_replay_buffer(tmp_path):
    """Forked after the replay buffer was allocated, the workers kept every page of its zeros
    that the run's writes then copied: a second buffer by the end of a run (14 GB for five
    Humanoid agents over 1M steps)."""
    from dataclasses import replace

    from dstrl.train import Trainer, build_agent
    from tests.helpers import tiny_config

    config = replace(
        tiny_config(tmp_path / "run", seeds=2, steps=1_000_000),
        vector_env="async",
        env_workers=1,
    )
    (tmp_path / "run").mkdir()
    trainer = Trainer(config, build_agent(config), None)
    try:
        (worker,) = trainer.envs._processes

        def memory() -> int:  # kB: the worker's share of the pages it maps
            rollup = open(f"/proc/{worker.pid}/smaps_rollup").read().split("\n")
            return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))

        before = memory()
        trainer.buffer.rows.fill_(1.0)  # as a run fills it
        megabytes = trainer.buffer.rows.numel() * 4 / 2**20
        assert megabytes > 50
        # forked first, the worker holds none of it (0.01 MB); forked after, 11.5 of 69 MB
        assert (memory() - before) / 1024 < megabytes / 20
    finally:
        trainer.envs.close()
        trainer.eval_envs.close()


DRIFT = "tests.custom_envs:dstrl-test/Drift-v0"


def test_a_users_own_environment_is_named_by_its_module(tmp_path):
    """``module:id``, as ``gym.make`` takes it: the CLI had no way to import the module that
    registers a user's environment, so train, eval and export all refused it."""
    from dstrl.cli import main

    assert check_env(DRIFT)[0] == 3
    with pytest.raises(EnvError, match="^cannot import 'no_such_module'.*on PYTHONPATH"):
        check_env("no_such_module:Drift-v0")
    out = str(tmp_path / "run")
    args = ["--env", DRIFT, "--algo", "td3", "--steps", "300", "--start-steps", "100"]
    args += ["--eval-every", "300", "--eval-episodes", "1", "--td3.hidden-sizes", "8", "8"]
    assert main(["train", *args, "--no-progress", "--no-tensorboard", "--out", out]) == 0
    assert main(["eval", out, "--episodes", "1"]) == 0
    assert main(["export", out, "--out", str(tmp_path / "policy.safetensors")]) == 0


def test_an_environment_without_a_time_limit_is_refused():
    """Its evaluation episodes never ended: the run hung at its first evaluation."""
    with pytest.raises(EnvError, match="has no time limit.*max_episode_steps"):
        check_env("tests.custom_envs:dstrl-test/Endless-v0")


@pytest.mark.parametrize("env", ["Drift-v0", "GoalCheetah-v0"])
def test_an_environment_of_ones_own_resumes_exactly(tmp_path, env):
    """Only numbers and arrays of a Python environment were kept: a list of state was dropped
    without a word, and the resumed run went on from a fresh episode's. Of a MuJoCo task only
    the physics was kept, not a goal of its own."""
    from dataclasses import replace

    from dstrl.train import train
    from tests.helpers import tiny_config

    runs = {}
    for name in ("straight", "resumed"):
        env_id = f"tests.custom_envs:dstrl-test/{env}"
        config = tiny_config(tmp_path / name, algo="td3", env=env_id, steps=300, eval_every=150)
        if name == "resumed":
            assert train(config, stop_after=170) is None
            config = replace(config, resume=True)
        train(config)
        runs[name] = (tmp_path / name / "evaluations.csv").read_text()
    assert runs["straight"] == runs["resumed"]


@pytest.mark.parametrize(
    ("env", "unsaved"),
    [
        ("Normalized-v0", "its wrapper NormalizeObservation"),
        ("Counted-v0", "'counter' (Counter)"),
        ("Named-v0", "'named' (Pushes)"),
        ("Moded-v0", "'mode' (Mode)"),  # saved, it was pickled, and the run never loaded again
    ],
)
def test_a_run_says_what_of_its_environment_a_checkpoint_cannot_keep(
    tmp_path, capsys, env, unsaved
):
    from dataclasses import replace

    from dstrl.train import train
    from tests.helpers import tiny_config

    config = tiny_config(tmp_path / "run", algo="td3", env=f"tests.custom_envs:dstrl-test/{env}")
    train(replace(config, steps=150, eval_every=150, start_steps=140))
    err = capsys.readouterr().err
    assert "a resumed run will not continue" in err and unsaved in err


def test_a_resume_that_fails_leaves_no_environment_workers(tmp_path):
    """From Python, a resume refused after the workers were forked (its evaluations.csv gone)
    left them running in the caller's process."""
    import multiprocessing
    from dataclasses import replace

    from dstrl.errors import CheckpointError
    from dstrl.train import train
    from tests.helpers import tiny_config

    config = replace(tiny_config(tmp_path / "run", seeds=2), vector_env="async", env_workers=2)
    assert train(config, stop_after=250) is None
    (tmp_path / "run" / "evaluations.csv").unlink()
    with pytest.raises(CheckpointError, match="evaluations.csv is missing"):
        train(replace(config, resume=True))
    assert multiprocessing.active_children() == []
