"""The training loop: determinism, resume, truncation handling, run-directory contract."""

import csv
import json
import os
import shutil
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from dstrl.agents.base import ActorCritic
from dstrl.agents.sac import SACConfig
from dstrl.agents.td3 import TD3Config
from dstrl.analysis.runs import RunError, load_runs
from dstrl.checkpoint import load_checkpoint
from dstrl.cli import main
from dstrl.config import ConfigError, TrainConfig
from dstrl.train import Trainer, flushing_subnormals, train
from tests.helpers import RLX2_TINY, assert_same, tiny_config


def _evaluations(run_dir):
    with (run_dir / "evaluations.csv").open() as f:
        return [(int(r["step"]), int(r["seed"]), float(r["return"])) for r in csv.DictReader(f)]


def test_summary_and_files(tmp_path):
    summary = train(tiny_config(tmp_path / "run", seeds=2))
    run = tmp_path / "run"
    for name in ("config.json", "evaluations.csv", "train_metrics.csv", "checkpoint.pt"):
        assert (run / name).exists()
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["algo"] == "ds-td3" and summary["seeds"] == [0, 1]
    assert set(summary["final_return"]) == {"mean", "std", "per_seed"}
    assert len(summary["final_return"]["per_seed"]) == 2
    assert 0.3 < summary["params"]["total"] / summary["params"]["dense_total"] < 0.9
    flops = summary["flops"]
    assert flops["train"] < flops["dense_train"] and flops["inference"] < flops["dense_inference"]
    assert flops["run_total"] == 2 * (300 * flops["train"] + 300 * flops["inference"])
    assert summary["wall_seconds"] > 0 and summary["env_steps_per_second"] > 0
    evaluations = _evaluations(run)
    assert [(s, seed) for s, seed, _ in evaluations] == [(200, 0), (200, 1), (400, 0), (400, 1)]
    with (run / "train_metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [100, 200, 300, 400]
    assert all(float(r["env_steps_per_second"]) > 0 for r in rows)  # a slowdown shows here
    assert sum(int(r["connections_changed"]) for r in rows) > 0
    assert float(rows[-1]["density/critic1"]) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("algo", ["td3", "ds-td3", "ds-sac"])
def test_same_seed_same_evaluations(tmp_path, algo):
    train(tiny_config(tmp_path / "a", algo=algo))
    train(tiny_config(tmp_path / "b", algo=algo))
    train(tiny_config(tmp_path / "c", algo=algo, seed=5))
    assert _evaluations(tmp_path / "a") == _evaluations(tmp_path / "b")
    assert [r for *_, r in _evaluations(tmp_path / "a")] != [
        r for *_, r in _evaluations(tmp_path / "c")
    ]


# RLx2 with its dynamic buffer shrinking and n-step targets switched on before the stop
@pytest.mark.parametrize(
    ("algo", "extra"),
    [
        ("td3", {}),
        ("ds-td3", {}),
        ("ds-td3", {"nm": "2:4", "grow": "gradient"}),
        ("ds-td3", {"density": 0.1, "grow": "gradient", "sparse_kernels": "sparse"}),
        ("ds-sac", {"density": 0.1, "sparse_output": True, "sparse_kernels": "sparse"}),
        ("prune-td3", {}),
        ("ds-td3", {"redo_period": 40}),
        ("rlx2-td3", {**RLX2_TINY, "redo_period": 40}),
        ("rlx2-sac", RLX2_TINY),
        (("td3", "static-td3", "ds-td3"), {"grow": "gradient"}),
        ("sac", {}),
        ("prune-sac", {}),
        (
            "ds-sac",
            {
                "sac": SACConfig(
                    (32, 32), batch_size=32, autotune=True, tau=0.5, target_update_interval=50
                )
            },
        ),
    ],
)
def test_stop_and_resume_equals_uninterrupted(tmp_path, algo, extra):
    # Hopper: episodes end at different times per member, the stop falls mid-episode, and
    # topology updates (every 50 steps) happen before and after it.
    settings = dict(algo=algo, env="Hopper-v5", seeds=2, steps=500, eval_every=250, **extra)
    train(tiny_config(tmp_path / "whole", **settings))
    assert train(tiny_config(tmp_path / "parts", **settings), stop_after=333) is None
    assert max(s for s, *_ in _evaluations(tmp_path / "parts")) == 250
    train(tiny_config(tmp_path / "parts", **settings, resume=True))
    assert _evaluations(tmp_path / "parts") == _evaluations(tmp_path / "whole")
    assert _logs(tmp_path / "parts") == _logs(tmp_path / "whole")
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["agent"]
    parts = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)["agent"]
    assert_same(whole, parts)


def _logs(run_dir):
    """evaluations.csv and train_metrics.csv as text, without the wall-clock column."""
    metrics = (run_dir / "train_metrics.csv").read_text().splitlines()
    timing = metrics[0].split(",").index("env_steps_per_second")
    metrics = [",".join(v for i, v in enumerate(row.split(",")) if i != timing) for row in metrics]
    return (run_dir / "evaluations.csv").read_text(), metrics


def _scalar_steps(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_resumed_run_keeps_the_events_logged_up_to_its_checkpoint(tmp_path):
    """Events of the checkpoint's own step were logged before it: a resume keeps them (and a
    rerun of a finished run neither drops its last events, nor adds an events file, nor
    rewrites its checkpoint)."""
    whole, run = tmp_path / "whole", tmp_path / "run"
    train(tiny_config(whole, tensorboard=True))
    assert train(tiny_config(run, tensorboard=True), stop_after=300) is None
    train(tiny_config(run, tensorboard=True, resume=True))
    expected = _scalar_steps(whole)
    assert expected["eval/return_mean"] == [200, 400]
    assert _scalar_steps(run) == expected
    checkpoint = (run / "checkpoint.pt").read_bytes()
    files = sorted((run / "tensorboard").iterdir())
    train(tiny_config(run, tensorboard=True, resume=True))
    assert (run / "checkpoint.pt").read_bytes() == checkpoint
    assert _scalar_steps(run) == expected
    assert sorted((run / "tensorboard").iterdir()) == files


def test_an_extension_is_not_finished_until_it_ends(tmp_path):
    """The summary of the shorter run stayed while an extension trained or after it stopped,
    and the report took the run as finished at its new length."""
    run = tmp_path / "run"
    train(tiny_config(run, steps=300))
    finished = (run / "summary.json").read_text()
    assert train(tiny_config(run, steps=400, resume=True), stop_after=350) is None
    assert not (run / "summary.json").exists()
    with pytest.raises(RunError, match="is not finished"):
        load_runs(run)
    (run / "summary.json").write_text(finished)  # as an older dstrl left it
    with pytest.raises(RunError, match="extended to 400 steps, and its summary.json is of 300"):
        load_runs(run)


def test_a_row_cut_short_by_a_crash_or_a_full_disk_is_dropped_on_resume(tmp_path):
    """A row cut short lacks its line break; cut inside its step ("2750" to "2") it read as an
    earlier step, survived the resume as "2,,,,", and the report refused the finished run."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(tiny_config(whole))
    assert train(tiny_config(parts), stop_after=300) is None
    for log in ("evaluations.csv", "train_metrics.csv"):
        with (parts / log).open("a") as f:
            f.write("2")
    train(tiny_config(parts, resume=True))
    assert _logs(parts) == _logs(whole)


def test_extending_a_run_drops_its_off_grid_end_evaluation(tmp_path):
    train(tiny_config(tmp_path / "run", steps=300, eval_every=200))
    assert [s for s, *_ in _evaluations(tmp_path / "run")] == [200, 300]
    summary = train(tiny_config(tmp_path / "run", steps=400, eval_every=200, resume=True))
    assert [s for s, *_ in _evaluations(tmp_path / "run")] == [200, 400]
    assert summary["evaluations"] == 2


def test_truncation_is_stored_with_the_true_last_observation(tmp_path):
    # Pendulum truncates every 200 steps and never terminates; no learning (start_steps = steps)
    train(tiny_config(tmp_path / "run", steps=250, start_steps=250, eval_every=250))
    rows = torch.load(tmp_path / "run" / "checkpoint.pt")["buffer"]["rows"][0]
    obs, next_obs, terminated = rows[:, :3], rows[:, 5:8], rows[:, -1]  # obs, a, r, next, term
    assert (terminated == 0).all()  # truncation is not termination: bootstrap through it
    assert torch.equal(next_obs[:198], obs[1:199])  # within an episode
    assert not torch.equal(next_obs[199], obs[200])  # last transition keeps the final obs
    assert np.isclose(float(next_obs[199, :2].norm()), 1.0, atol=1e-5)  # (cos, sin) of a state


def test_existing_run_directory_needs_resume(tmp_path):
    train(tiny_config(tmp_path / "run", steps=200, eval_every=200))
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config(tmp_path / "run", steps=200))


def test_bad_configuration_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match="λ=100"):
        train(tiny_config(tmp_path / "run", lambdas=(100.0, 4.0)))
    assert not (tmp_path / "run").exists()


def test_agent_state_saved_on_another_device_loads(tmp_path):
    from dstrl.train import build_agent

    agent = build_agent(tiny_config(tmp_path / "unused"))
    state = agent.state_dict()
    state["generator_device"], state["generator"] = "cuda", torch.zeros(16, dtype=torch.uint8)
    agent.load_state_dict(state)  # a CUDA generator state cannot go into a CPU generator
    assert agent.updates == 0


def test_gradient_growth_trains_and_counts_its_dense_gradients(tmp_path):
    rigl = train(tiny_config(tmp_path / "rigl", grow="gradient"))
    random = train(tiny_config(tmp_path / "random"))
    assert rigl["params"] == random["params"]
    # the dense weight gradients at each of the topology updates (every 50 steps) cost extra
    assert random["flops"]["train"] < rigl["flops"]["train"] < random["flops"]["dense_train"]
    with (tmp_path / "rigl" / "train_metrics.csv").open() as f:
        assert sum(int(r["connections_changed"]) for r in csv.DictReader(f)) > 0


# 300 learning steps: pruning ends at 0.8 of them, 240, on the grid of --update-period: 250,
# and with 160 (0.8 · 300 / 160 rounds to 2) at 160, not at 320, after the run
@pytest.mark.parametrize("period", [50, 160])
def test_gradual_pruning_ends_at_the_static_count_and_pays_for_its_dense_phase(tmp_path, period):
    pruned = train(tiny_config(tmp_path / "prune", algo="prune-td3", update_period=period))
    static = train(tiny_config(tmp_path / "static", algo="static-td3", update_period=period))
    assert pruned["params"] == static["params"]  # same final connection counts
    assert pruned["flops"]["train"] == static["flops"]["train"]
    # over the run, pruning's dense start costs more than a network sparse from the first step
    assert static["flops"]["run_ratio"] < pruned["flops"]["run_ratio"] < 1
    with (tmp_path / "prune" / "train_metrics.csv").open() as f:
        density = [float(r["density/critic1"]) for r in csv.DictReader(f)]
    assert density[0] == 1.0 and density == sorted(density, reverse=True)
    assert density[-1] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("tau", [1.0, 0.05])
def test_sac_targets_stay_as_sparse_as_the_online_critics(tmp_path, tau):
    from dstrl.train import build_agent

    sac = SACConfig((32, 32), batch_size=16, tau=tau, target_update_interval=5)
    agent = build_agent(tiny_config(tmp_path / "x", algo="ds-sac", sac=sac, update_period=10))
    assert agent.actor_target is None and len(agent.sparse_targets) == 1
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        obs = torch.randn(1, 16, 3, generator=g)
        action = torch.rand(1, 16, 1, generator=g) * 4 - 2
        reward, terminated = torch.randn(1, 16, generator=g), torch.zeros(1, 16)
        agent.update(obs, action, reward, obs, terminated)
        if agent.updates % 10 == 5:  # right after a target update (topology changes at 10s)
            for i, mask in zip(agent.critic_sparse.indices, agent.critic_sparse.masks, strict=True):
                target = agent.critic_target.weights[i]
                assert ((target != 0).sum(dim=(1, 2)) <= mask.sum(dim=(1, 2))).all()
                if tau == 1.0:  # a hard update copies the online weights, zeros included
                    assert torch.equal(target, agent.critic.weights[i])
    losses = agent.pop_losses()
    assert losses["alpha"] == pytest.approx(0.2) and np.isfinite(losses["actor_loss"])


def test_training_flushes_subnormal_floats(tmp_path, monkeypatch):
    """Weights of dead units decay into subnormals, which are slow on many CPUs: flushed while
    the run trains."""
    seen = []
    update = ActorCritic.update

    def watched(self, *args, **kwargs):
        seen.append(flushing_subnormals())
        return update(self, *args, **kwargs)

    monkeypatch.setattr(ActorCritic, "update", watched)
    torch.set_flush_denormal(False)  # as a fresh process, whatever ran before in this one
    train(tiny_config(tmp_path / "run", steps=200))
    assert seen and all(seen)


@pytest.mark.parametrize("overlap", [False, True])
def test_each_update_samples_the_transitions_its_loop_promises(tmp_path, monkeypatch, overlap):
    """Without --overlap the update of step t samples transitions 1..t; with it, 1..t-1 (it is
    queued before the environments take step t). The same steps learn either way."""
    from dstrl.train import Trainer

    seen = []  # (the update's step, the replay's size when it sampled)
    learn = Trainer._learn

    def record(self, step):
        seen.append((step, int(self.buffer.sizes.min()), int(self.buffer.sizes.max())))
        learn(self, step)

    monkeypatch.setattr(Trainer, "_learn", record)
    train(tiny_config(tmp_path / "run", seeds=2, overlap=overlap, steps=300, start_steps=100))
    lag = 1 if overlap else 0
    assert seen == [(t, t - lag, t - lag) for t in range(101, 301)]


def test_overlap_needs_a_warm_up(tmp_path):
    with pytest.raises(ConfigError, match="--start-steps ≥ 1"):
        tiny_config(tmp_path / "run", overlap=True, start_steps=0).validate()


@pytest.mark.parametrize("overlap", [False, True])
def test_environments_in_worker_processes_give_the_same_run(tmp_path, overlap):
    """--vector-env async steps the agents' environments in worker processes, a block each
    (with --overlap, while the update runs); the run is the same, including a stop and a resume
    that switches between the two kinds. An overlapped run is not the plain loop's."""
    settings = dict(env="Hopper-v5", seeds=3, steps=400, eval_every=200, overlap=overlap)
    train(tiny_config(tmp_path / "sync", **settings))
    parts = tiny_config(tmp_path / "async", vector_env="async", env_workers=2, **settings)
    assert train(parts, stop_after=250) is None
    train(tiny_config(tmp_path / "async", **settings, resume=True))
    assert _evaluations(tmp_path / "async") == _evaluations(tmp_path / "sync")
    assert _logs(tmp_path / "async") == _logs(tmp_path / "sync")
    if overlap:
        train(tiny_config(tmp_path / "plain", **{**settings, "overlap": False}))
        assert _evaluations(tmp_path / "plain") != _evaluations(tmp_path / "sync")


def test_auto_resume_from_python_starts_continues_and_restarts(tmp_path):
    """auto_resume=True was read by the command line only: from Python a stopped run was
    refused with "pass --auto-resume"."""
    whole = tmp_path / "whole"
    train(tiny_config(whole))
    run = tmp_path / "run"
    assert train(tiny_config(run, auto_resume=True), stop_after=300) is None  # started
    assert train(tiny_config(run, auto_resume=True))["steps"] == 400  # continued
    assert _logs(run) == _logs(whole)
    killed = tmp_path / "killed"  # before its first checkpoint: cleared, started again
    killed.mkdir()
    (killed / "config.json").write_text("{half a conf")
    train(tiny_config(killed, auto_resume=True))
    assert _logs(killed) == _logs(whole)
    with pytest.raises(ConfigError, match="give resume or auto_resume, not both"):
        train(tiny_config(run, auto_resume=True, resume=True))
    (run / "checkpoint.pt").unlink()  # finished, its checkpoint deleted: nothing to do
    assert train(tiny_config(run, auto_resume=True)) == json.loads(
        (run / "summary.json").read_text()
    )


def test_a_copied_run_resumes_where_it_is_now(tmp_path):
    """TrainConfig.load gave the path the run first trained in: resuming a copy from Python
    extended the original."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    train(tiny_config(original, steps=300))
    shutil.copytree(original, copy)
    assert TrainConfig.load(str(copy)).run_dir == copy
    train(replace(TrainConfig.load(copy), resume=True, steps=400))
    assert json.loads((copy / "summary.json").read_text())["steps"] == 400
    assert json.loads((original / "summary.json").read_text())["steps"] == 300


def test_a_resume_built_in_python_must_be_the_saved_configuration(tmp_path):
    """``resume=True`` on another config (a seed, an algorithm) trained on with it in the same
    run directory, mixing the two in its logs; only how a run computes may change."""
    from dataclasses import replace

    from dstrl.config import TrainConfig

    config = tiny_config(tmp_path / "run", checkpoint_every=100)
    assert train(config, stop_after=200) is None
    saved = (tmp_path / "run" / "config.json").read_text()
    for changed in ({"seed": 7}, {"algo": "static-td3"}, {"steps": 300}):
        with pytest.raises(ConfigError, match="saved configuration|can only grow") as caught:
            train(replace(config, resume=True, **changed))
        assert next(iter(changed)) in str(caught.value)
    assert (tmp_path / "run" / "config.json").read_text() == saved
    resumed = replace(TrainConfig.load(tmp_path / "run"), out=tmp_path / "run", resume=True)
    summary = train(replace(resumed, tensorboard=True))  # an override
    assert summary["steps"] == 400 and summary["seeds"] == [0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("algo", "DS-TD3", "--algo: unknown algorithm 'DS-TD3'; choose from td3, static-td3"),
        ("grow", "magic", "--grow must be one of 'random', 'gradient' or None, not 'magic'"),
        ("vector_env", "threads", "--vector-env must be one of 'sync', 'async', not 'threads'"),
        ("steps", 1000.5, "--steps must be an integer, not 1000.5"),
        ("steps", True, "--steps must be an integer, not True"),
        ("density", "0.1", "--density must be a number or None, not '0.1'"),
        ("lambdas", 7.0, "--lambdas must be a tuple of numbers or None, not 7.0"),
        ("td3", {"batch_size": 32}, "--td3 must be a TD3Config, not {'batch_size': 32}"),
        # NaN trained: a NaN λ as a dense layer, a NaN noise as a divergence after the warm-up
        ("lambdas", (float("nan"), 64.0), "--lambdas must be finite, not (nan, 64.0)"),
        ("td3", TD3Config(exploration_noise=float("nan")), "--td3.exploration-noise must be"),
    ],
)
def test_a_configuration_built_in_python_is_checked_as_the_command_line_is(
    tmp_path, field, value, message
):
    """Choices trained silently as the default (grow="magic"); wrong types failed deep inside,
    some after the run directory was made; and so did a field set after construction."""
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{field: value})
    assert str(caught.value).startswith(message)
    config = tiny_config(tmp_path / "run")
    setattr(config, field, value)
    with pytest.raises(ConfigError) as caught:
        train(config)
    assert str(caught.value).startswith(message.split(":")[0])
    assert not (tmp_path / "run").exists()


def test_a_field_set_after_construction_gets_what_the_constructor_gives(tmp_path):
    """None for a defaulted field was a TypeError deep in the checks ('<' not supported), a str
    out '--out must be a Path', and train() of anything but a configuration an AttributeError."""
    config = tiny_config(tmp_path / "run", steps=200)
    config.start_steps, config.drop_fraction, config.buffer_min_size = None, None, None
    config.out = str(tmp_path / "elsewhere")
    assert train(config)["steps"] == 200
    assert (config.start_steps, config.drop_fraction, config.buffer_min_size) == (25_000, 0.05, 20)
    assert (tmp_path / "elsewhere" / "summary.json").exists()
    with pytest.raises(TypeError, match="^train\\(\\) takes a TrainConfig, not str$"):
        train(str(tmp_path / "run"))
    with pytest.raises(TypeError, match="^TrainConfig.load takes a run directory, not None$"):
        TrainConfig.load(None)


def test_numpy_numbers_are_numbers_to_a_configuration(tmp_path):
    """A seed from np.arange was "--seed must be an integer, not np.int64(1)"; an array is
    still not a number, nor a tuple."""
    with pytest.raises(ConfigError, match="--lambdas must be a tuple of numbers or None, not"):
        TrainConfig(lambdas=np.array([1.0, 8.0]))
    with pytest.raises(ConfigError, match="--seed must be an integer, not"):
        TrainConfig(seed=np.array([3]))
    config = tiny_config(tmp_path / "run", seed=np.arange(3)[1], density=np.float64(0.5))
    config = replace(config, td3=TD3Config((32, 32), batch_size=np.int64(32)), lambdas=None)
    assert type(config.seed) is int and type(config.td3.batch_size) is int
    train(config)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 1


@pytest.mark.parametrize(
    "field, value, message",
    [("threads", 0, "--threads must be a positive"), ("device", None, "--device must be a str")],
)
def test_what_torch_is_set_from_is_checked_first(tmp_path, field, value, message):
    """A run sets torch's threads and TF32 from its configuration before training: a thread
    count of 0 was torch's RuntimeError, a device of None an AttributeError."""
    config = tiny_config(tmp_path / "run")
    setattr(config, field, value)
    with pytest.raises(ConfigError, match=message):
        train(config)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("stop_after", [-5, 700.5, True])
def test_stop_after_is_a_step(tmp_path, stop_after):
    """-5 wrote a checkpoint of step 0, and 700.5 stopped at 701; NumPy's integers are steps."""
    with pytest.raises(ConfigError, match="stop_after must be a step"):
        train(tiny_config(tmp_path / "run"), stop_after=stop_after)
    assert train(tiny_config(tmp_path / "run"), stop_after=np.int64(200)) is None


def test_train_runs_in_a_thread_of_its_own(tmp_path):
    """Off the main thread, where no signal handler can be set, train() failed after it had
    written the run directory."""
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(train(tiny_config(tmp_path / "r"))))
    thread.start()
    thread.join(timeout=300)
    assert results and results[0]["steps"] == 400


@pytest.mark.parametrize(
    "signum, stops",
    [
        (signal.SIGINT, KeyboardInterrupt),
        (signal.SIGTERM, SystemExit),
        (signal.SIGUSR1, SystemExit),
        (signal.SIGHUP, SystemExit),  # a closed ssh session's: it killed the run, nothing saved
    ],
)
def test_a_signal_stops_a_loop_of_runs_in_python(tmp_path, monkeypatch, signum, stops):
    """train() returned None on Ctrl-C or SIGTERM, so a caller's loop of runs went on to the next
    run: now it raises after the checkpoint, as the signal would have without it. SIGUSR1
    (Slurm's warning before a job's time limit) killed the run with nothing saved."""
    log = Trainer._log

    def signalled(self, *args):
        log(self, *args)
        if self.step == 200:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(Trainer, "_log", signalled)
    started = []
    with pytest.raises(stops) as caught:
        for seed in range(3):
            started.append(seed)
            train(tiny_config(tmp_path / f"seed{seed}", seed=seed))
    assert started == [0]
    if stops is SystemExit:
        assert caught.value.code == 130
    assert load_checkpoint(tmp_path / "seed0")["step"] == 200
    monkeypatch.setattr(Trainer, "_log", log)
    resumed = train(replace(tiny_config(tmp_path / "seed0"), resume=True))
    assert resumed is not None and resumed["steps"] == 400


def test_ctrl_c_while_a_run_starts_stops_it_at_a_checkpoint(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the seconds a run starts (environment workers, a checkpoint loading, graph
    capture) ended it with exit 130 and no word, leaving a directory that --resume refused."""
    costs = Trainer._costs

    def interrupted(self):
        costs(self)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_costs", interrupted)
    config = tiny_config(tmp_path / "run")
    assert main(["train", *_cli_args(config)]) == 130
    assert "stopped at step 0; continue with" in capsys.readouterr().out
    assert load_checkpoint(config.run_dir)["step"] == 0
    monkeypatch.setattr(Trainer, "_costs", costs)
    assert train(replace(config, resume=True))["steps"] == 400


def test_a_second_ctrl_c_stops_at_once_and_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    """The first Ctrl-C waits for the step to end (an evaluation of long episodes, say); a
    second one stops there, the last checkpoint (step 150) whole."""
    evaluate = Trainer._evaluate

    def impatient(self):
        if self.step == 200:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        evaluate(self)

    monkeypatch.setattr(Trainer, "_evaluate", impatient)
    config = tiny_config(tmp_path / "run")
    assert main(["train", *_cli_args(config)]) == 130
    err = capsys.readouterr().err
    assert "stopping at a checkpoint after this step (Ctrl-C again: at once)" in err
    assert "stopped at once by a second Ctrl-C: continue from its checkpoint with" in err
    assert f"dstrl train --out {config.run_dir} --auto-resume" in err
    assert load_checkpoint(config.run_dir)["step"] == 150
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    assert train(replace(config, auto_resume=True))["steps"] == 400


def _cli_args(config: TrainConfig) -> list[str]:
    """``dstrl train``'s arguments for ``tiny_config``'s run."""
    return [
        "--algo", *config.methods, "--env", config.env, "--steps", str(config.steps),
        "--start-steps", str(config.start_steps), "--eval-every", str(config.eval_every),
        "--eval-episodes", "1", "--update-period", str(config.update_period),
        "--checkpoint-every", str(config.checkpoint_every), "--log-every", str(config.log_every),
        "--td3.hidden-sizes", "32", "32", "--td3.batch-size", "32", "--lambdas", "1", "8",
        "--no-progress",
        "--no-tensorboard", "--out", str(config.run_dir),
    ]  # fmt: skip


def test_train_gives_back_the_callers_torch_settings(tmp_path):
    """A run sets torch's threads to its --threads and flushes subnormals; a notebook's torch
    stayed at 1 thread, flushing, after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.set_flush_denormal(False)
    try:
        train(tiny_config(tmp_path / "run", threads=1, steps=200))
        assert torch.get_num_threads() == 2
        assert not flushing_subnormals()
    finally:
        torch.set_num_threads(before)


def test_a_sparse_method_whose_layers_are_all_dense_by_er_trains(tmp_path):
    """At the paper's λ, layers 32 wide are all dense (ER caps them at 1): a topology update then
    moved no layer, and counting its changes per member failed (IndexError) at the first."""
    summary = train(tiny_config(tmp_path / "run", lambdas=None))  # the paper's λ
    assert summary["params"]["total"] == summary["params"]["dense_total"]
    with (tmp_path / "run" / "train_metrics.csv").open() as f:
        assert [int(r["connections_changed"]) for r in csv.DictReader(f)] == [0, 0, 0, 0]


def test_sighup_stays_ignored_under_nohup():
    """`nohup dstrl train ...` asks the run to outlive its terminal: SIGHUP is left ignored,
    while without nohup it stops the run at a checkpoint as SIGTERM does."""
    from dstrl.signals import STOPS, handling

    def handler(signum, frame):
        pass

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with handling(STOPS, handler):
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is handler
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with handling(STOPS, handler):
            assert signal.getsignal(signal.SIGHUP) is handler
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)
