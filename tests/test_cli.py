"""The command line as a user types it: one real MuJoCo run end to end, and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import tyro

from dstrl.cli import main
from dstrl.config import ConfigError, TrainConfig
from dstrl.resume import given_options
from dstrl.train import train
from tests.helpers import imported_by

TINY = [
    "--steps",
    "300",
    "--start-steps",
    "100",
    "--eval-every",
    "300",
    "--eval-episodes",
    "1",
    "--no-progress",
    "--no-tensorboard",
    "--td3.hidden-sizes",
    "32",
    "32",
    "--td3.batch-size",
    "16",
    "--lambdas",
    "2",
    "8",
    "--update-period",
    "50",
]


def dstrl(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "dstrl.cli", *args], capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_train_then_eval_on_halfcheetah(tmp_path):
    out = tmp_path / "run"
    result = dstrl(
        "train",
        "--algo",
        "ds-td3",
        "--env",
        "HalfCheetah-v5",
        "--seeds",
        "2",
        "--out",
        str(out),
        *TINY,
        "--tensorboard",
    )
    assert "ds-td3 on HalfCheetah-v5: final return" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    rate = f"{summary['env_steps_per_second']:.0f} env steps/s"
    assert f"2 agents, {rate} in all; results in {out}" in result.stdout
    assert summary["env"] == "HalfCheetah-v5" and summary["steps"] == 300
    assert summary["seeds"] == [0, 1]
    assert any((out / "tensorboard").iterdir())
    evaluation = dstrl("eval", str(out), "--episodes", "1")
    lines = evaluation.stdout.splitlines()
    assert lines[0].startswith("ds-td3 seed 0: return") and lines[1].startswith("ds-td3 seed 1")
    assert lines[2].startswith("ds-td3 mean") and lines[2].endswith("over 2 agents")


def test_bad_input_is_one_line_exit_2_without_traceback(tmp_path):
    result = dstrl("train", "--env", "NoSuchEnv-v0", "--out", str(tmp_path / "x"), check=False)
    assert result.returncode == 2
    assert "unknown environment 'NoSuchEnv-v0'. Give a Gymnasium id" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "CartPole-v1"], "Discrete action space"),
        (["--density", "1.5"], "--density must be in (0, 1]"),
        (["--density", "0"], "--density must be in (0, 1]"),
        (["--lambdas", "300", "64"], "λ=300 gives density"),
        (["--steps", "-5"], "--steps must be a positive integer"),
        (["--drop-fraction", "1.2"], "--drop-fraction must be in (0, 1)"),
        (["--density", "0.5", "--lambdas", "7", "64"], "either --density or --lambdas"),
        (["--grow", "gradient", "--update-period", "51"], "multiple of --td3.policy-delay"),
        (["--device", "cuda:999"], "GPU"),
        (["--device", "banana"], "is not a torch device"),
        # a run too short to learn is noted, but never before an error
        (["--device", "banana", "--steps", "300"], "is not a torch device"),
        (["--env", "CartPole-v1", "--steps", "300"], "Discrete action space"),
        (["--seed", "-1"], "--seed must be in [0, 2**32 - --seeds], got -1"),
        (["--seed", str(2**32 - 1), "--seeds", "2"], "--seed must be in [0, 2**32 - --seeds]"),
        (["--nm", "2-4"], "--nm takes N:M"),
        (["--nm", "4:2"], "N:M needs 0 < N < M"),
        (["--nm", "2:4", "--density", "0.5"], "--nm fixes each layer's density"),
        (["--algo", "prune-td3", "--nm", "2:4"], "cannot be combined with gradual pruning"),
        (["--algo", "prune-td3", "--steps", "1000", "--start-steps", "900"], "has no room"),
        # pruning's end, 0.8 of 800 learning steps, rounded onto the grid of 1,000 past the run
        (["--algo", "prune-td3", "--steps", "1200", "--start-steps", "400"], "has no room"),
        (["--algo", "prune-sac", "--prune-start", "0.9", "--prune-end", "0.5"], "--prune-start"),
        (["--algo", "sac", "--sac.batch-size", "0"], "--sac.batch-size must be a positive"),
        (["--algo", "ds-sac", "--sac.tau", "0"], "--sac.tau must be in (0, 1]"),
        (["--algo", "sac", "--sac.alpha", "-1"], "--sac.alpha must be ≥ 0"),
        (["--dense-input"], "--dense-input needs --density or --nm"),
        (["--vector-env", "async", "--env-workers", "0"], "--env-workers must be a positive"),
        (["--overlap", "--start-steps", "0"], "--overlap's first update samples"),
        (["--cuda-graph"], "--cuda-graph needs --device cuda, not --device cpu"),
        (["--tf32"], "--tf32 needs --device cuda"),
        (
            ["--grow", "gradient", "--actor-update-period", "-1"],  # was about the policy delay
            "--actor-update-period must be a positive integer, got -1",
        ),
        (["--algo", "rlx2-td3", "--buffer-check-every", "0"], "--buffer-check-every must be a"),
    ],
)
def test_configuration_errors(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_an_algo_option_without_a_name_is_an_argument_error(tmp_path, capsys):
    """As tyro reports any malformed option: a box, exit code 2 (it was an IndexError)."""
    with pytest.raises(SystemExit) as stop:
        main(["train", "--algo", "--steps", "300", "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    assert "needs at least one algorithm" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_options_a_run_never_reads_and_a_warm_up_as_long_as_the_run_are_noted(tmp_path, capsys):
    run = tmp_path / "run"
    extra = ["--env-workers", "2", "--distribution", "uniform", "--sac.tau", "0.01"]
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY, *extra]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert notes == [
        "dstrl: note: --distribution does nothing without --density (it spreads --density; λ is "
        "used)",
        "dstrl: note: --sac.tau does nothing for td3 (its options are --td3.*)",
        "dstrl: note: --env-workers does nothing without --vector-env async",
    ]
    assert (run / "summary.json").exists()
    short = ["train", "--env", "Pendulum-v1", "--out", str(tmp_path / "short"), *TINY]
    assert main([*short, "--start-steps", "300"]) == 0
    assert (
        "dstrl: note: --start-steps is 300 and --steps 300: every action is random and the "
        "agents never learn (lower --start-steps)"
    ) in capsys.readouterr().err
    # RLx2, whose topology never freezes early, was refused: "--freeze-last 0 ... lower it"
    rlx2 = ["train", "--env", "Pendulum-v1", "--out", str(tmp_path / "rlx2"), *TINY]
    rlx2 += ["--algo", "rlx2-td3", "--start-steps", "300"]
    assert main(rlx2) == 0
    assert "every action is random and the agents never learn" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, note",
    [
        # the default freeze (5% of the run) and warm-up leave 1,000 learning steps
        (["--steps", "26000"], "--update-period 1,000: the topology freezes after 0 learning "),
        (["--steps", "26000", "--freeze-last", "0", "--update-period", "500"], None),
        (["--steps", "25100", "--td3.policy-delay", "200"], "the actor never trains"),
        (["--algo", "sac", "--steps", "10500"], "the target critics never change"),
        (["--steps", "26000", "--redo-period", "5000"], "no unit is ever recycled"),
        (["--steps", "29000", "--replay", "dynamic"], "the dynamic buffer never shrinks"),
        # checked at the steps it divides: at 30,000 here, though only 5,000 steps learn
        (["--steps", "30000", "--replay", "dynamic", "--update-period", "500"], None),
        (["--steps", "26000", "--td3.batch-size", "30000"], "every batch repeats transitions"),
    ],
)
def test_a_schedule_that_never_comes_due_is_noted(argv, note):
    """ds-td3 whose topology never changed was reported as ds-td3, without a word."""
    notes = tyro.cli(TrainConfig, args=argv).notes(given_options(argv))
    if note is None:
        assert notes == []
    else:
        assert any(note in n for n in notes), notes


@pytest.mark.parametrize(
    "argv, note",
    [
        (["--algo", "td3", "--density", "0.1"], "--density does nothing for td3, whose networks"),
        # not "without --density", which was given (td3 reads neither)
        (
            ["--algo", "td3", "--density", "0.1", "--distribution", "uniform"],
            "--distribution does nothing for td3, whose networks are dense",
        ),
        (["--algo", "static-td3", "--grow", "gradient"], "--grow does nothing for static-td3, "),
        (["--algo", "sac", "--nm", "2:4"], "--nm does nothing for sac, whose networks are dense"),
        (["--algo", "ds-td3", "--prune-end", "0.5"], "only prune-td3 prunes gradually"),
        (["--algo", "prune-sac", "--decay", "cosine"], "gradual pruning never drops and grows"),
        (["--buffer-min-size", "5"], "--buffer-min-size does nothing without --replay dynamic"),
        (["--n-step-start", "0.2"], "--n-step-start does nothing with one-step targets"),
    ],
)
def test_an_option_the_method_never_reads_is_noted(argv, note):
    """Sparsity options on a dense method (a forgotten static- prefix trained dense) and
    growth on a static one were taken without a word."""
    config = tyro.cli(TrainConfig, args=argv)
    assert any(note in n for n in config.notes(given_options(argv)))
    assert TrainConfig().notes(set()) == []


def test_help_gives_an_algorithm_dependent_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the box unwrapped
    assert "starts (default: 25,000 TD3, 10,000 SAC). --eval-every" in text  # not "(default: None)"
    assert "(default: 0.05 TD3, 0.1 SAC; rlx2-*: 0.5). --drop-score" in text
    assert text.endswith("aims for (default: minus the action dimension).")  # the last option
    assert "(default: None)" not in text


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_wraps_each_option_as_one_paragraph(command, capsys, monkeypatch):
    """tyro kept a docstring's source line breaks, and --help broke every long option's text at
    them: "spread by --distribution (instead of" and "λ)." on lines of their own."""
    monkeypatch.setenv("COLUMNS", "1000")  # wide enough for every option's text on one line
    with pytest.raises(SystemExit):
        main([command, "--help"])
    lines = [line.strip("│ ") for line in capsys.readouterr().out.splitlines()]
    texts: dict[str, list[str]] = {}  # each option's text lines, under its flags
    flags = None
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        rule = bool(after) and set(after) <= set("-─")  # under a group's title
        if rule or line.startswith(("╭", "╰")) or set(line) <= set("-─"):
            flags = None  # a group's title or its rule, then its description
        elif line.startswith("-"):
            flags = line
            texts[flags] = []
        elif flags is not None:
            texts[flags].append(line)
    assert len(texts) > 10
    assert all(len(text) <= 1 for text in texts.values()), {
        f: t for f, t in texts.items() if len(t) > 1
    }
    if command == "train":
        assert "spread by --distribution (instead of λ)." in "\n".join(lines)


def test_the_command_line_imports_training_only_to_train():
    """`dstrl report`, `sweep` and every --help imported torch, Numba and Gymnasium for the
    errors they catch: 2.3 s before a report could start, 0.5 s without."""
    assert imported_by("dstrl.cli") == []


def test_a_report_without_runs_says_what_to_give(capsys):
    assert main(["report"]) == 2
    assert "give the run directories to report on" in capsys.readouterr().err


def test_resume_errors(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["train", "--out", str(missing), "--resume"]) == 2
    assert "not a dstrl run directory" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--algo", "td3"]) == 2
    assert "--algo is ds-td3 in the run, td3 here" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--overlap"]) == 2
    assert "--overlap is off in the run, on here" in capsys.readouterr().err
    # what the run never reads is noted, as a new run notes it, not refused as a difference
    assert main(["train", "--out", str(run), "--resume", "--sac.batch-size", "8"]) == 0
    assert "--sac.batch-size does nothing for td3" in capsys.readouterr().err
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--out", str(run), "--resume", "--steps", "400"]) == 2
    assert "corrupt" in capsys.readouterr().err
    (run / "checkpoint.pt").unlink()  # of a finished run: nothing to do (see test_rundir)
    assert main(["train", "--out", str(run), "--resume", "--steps", "500"]) == 2
    err = capsys.readouterr().err
    assert "does not exist, but the run finished (summary.json)" in err
    assert "cannot be resumed or extended" in err  # not advice to --auto-resume, refused below
    # started again as it was: not --resume, and not --auto-resume, which would leave it as it
    # is (a run stopped before its first checkpoint has no summary: see test_rundir)
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY]) == 1
    err = capsys.readouterr().err
    assert "holds files that are not an unfinished dstrl run (summary.json)" in err


def test_resume_finds_a_run_where_the_same_options_put_it(tmp_path, monkeypatch, capsys):
    """--auto-resume took the default run directory, --resume asked for --out."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env", "Pendulum-v1", *TINY]) == 0
    assert main(["train", "--env", "Pendulum-v1", "--resume", "--steps", "400"]) == 0
    summary = json.loads(Path("runs/Pendulum-v1-ds-td3-s0/summary.json").read_text())
    assert summary["steps"] == 400
    assert main(["train", "--env", "Hopper-v5", "--resume"]) == 2
    assert "runs/Hopper-v5-ds-td3-s0 is not a dstrl run directory" in capsys.readouterr().err


def test_a_resume_may_change_how_sparse_layers_are_computed(tmp_path, capsys):
    """A CPU run computed by connections continues on a GPU, where only masked-dense runs."""
    run = tmp_path / "run"
    sparse = ["--sparse-kernels", "sparse"]
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY, *sparse]) == 0
    args = ["train", "--out", str(run), "--resume", "--steps", "600"]
    assert main([*args, "--sparse-kernels", "masked"]) == 0
    assert json.loads((run / "config.json").read_text())["sparse_kernels"] == "masked"
    assert json.loads((run / "summary.json").read_text())["steps"] == 600


def test_resume_can_extend_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY]) == 0
    assert main(["train", "--out", str(run), "--resume", "--steps", "600"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 600 and summary["evaluations"] == 2


@pytest.mark.parametrize(
    ("algo", "extra"),
    [
        ("ds-sac", ["--grow", "gradient", "--density", "0.1", "--sparse-output"]),
        ("static-td3", ["--nm", "1:4"]),
    ],
)
def test_other_methods_train_and_evaluate_from_the_command_line(tmp_path, algo, extra):
    out = tmp_path / "run"
    sac = ["--sac.hidden-sizes", "32", "32", "--sac.batch-size", "16"]
    at = TINY.index("--lambdas")
    args = TINY[:at] + TINY[at + 3 :] + sac + extra  # the method's own sparsity instead
    result = dstrl("train", "--algo", algo, "--env", "Hopper-v5", "--out", str(out), *args)
    assert f"{algo} on Hopper-v5: final return" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == algo and summary["params"]["ratio"] < 1
    assert "seed 0: return" in dstrl("eval", str(out), "--episodes", "1").stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_to_a_run_with_environment_workers_stops_it_with_a_checkpoint(tmp_path, signum):
    """A cluster's requeue signals the whole process group, workers included: the run still
    stops at a step boundary with a checkpoint (its workers answer until it is written), and
    resumes. SIGHUP (or SIGUSR1) ended the workers, forked with the command's handler, and the
    run with them, with no checkpoint."""
    run = tmp_path / "run"
    args = ["train", "--env", "Hopper-v5", "--vector-env", "async", "--env-workers", "2"]
    args += ["--seeds", "2", "--out", str(run), *TINY, "--steps", "100000", "--log-every", "100"]
    process = subprocess.Popen(
        [sys.executable, "-m", "dstrl.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    metrics = run / "train_metrics.csv"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    os.killpg(process.pid, signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err  # stopped by a signal, resumable
    assert "stopped at step" in out and "--resume" in out
    stopped = int(out.split("stopped at step ")[1].split(";")[0].replace(",", ""))
    resumed = replace(TrainConfig.load(run), out=run, resume=True, progress=False)
    assert train(resumed, stop_after=stopped + 100) is None  # continued, then stopped again
    rows = (run / "train_metrics.csv").read_text().splitlines()
    assert int(rows[-1].split(",")[0]) == (stopped + 100) // 100 * 100


def _handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signum`` (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(status.split("SigCgt:")[1].split()[0], 16)
    return bool(caught >> (signum - 1) & 1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP])
def test_a_signal_while_the_command_starts_is_one_line(tmp_path, signum):
    """Ctrl-C in the seconds its modules import printed a KeyboardInterrupt traceback, SIGTERM
    ended it silently with 143, and SIGUSR1 with 138."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "dstrl", "train", "--out", str(out), *TINY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not _handles(process.pid, signal.SIGTERM):  # the entry's handlers are set
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
    process.send_signal(signum)  # torch alone takes longer to import than this
    out_text, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err == "dstrl: stopped while starting; nothing was done\n"
    assert out_text == "" and not out.exists()


@pytest.mark.parametrize(
    "stage, when",
    [
        ("build_agent", "True"),
        ("write_atomic", "args[0].name == 'summary.json'"),
        ("tyro.extras.subcommand_cli_from_dict", "True"),  # the command line is read
    ],
)
def test_sigterm_outside_the_training_loop_says_so_and_exits_130(tmp_path, stage, when):
    """While a run starts (its command line read, its agent built) or ends (its summary
    written), SIGTERM used to end it silently with 143; the same command with --auto-resume
    then starts or finishes it."""
    out = tmp_path / "run"
    args = ["train", "--env", "Pendulum-v1", "--out", str(out), *TINY]
    module, stage = stage.rsplit(".", 1) if "." in stage else ("dstrl.train", stage)
    term_in = (
        f"import os, signal, sys, {module} as t\n"
        f"real = t.{stage}\n"
        "def hit(*args, **kwargs):\n"
        f"    if {when}:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*args, **kwargs)\n"
        f"t.{stage} = hit\n"
        "from dstrl.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", term_in], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 130, result.stderr
    hint = "nothing is lost: rerun the same command, with --auto-resume (not --resume)"
    if module == "tyro.extras":
        hint = "nothing was done"
        assert not out.exists()
    assert result.stderr.endswith(f"dstrl: stopped by SIGTERM; {hint}\n")
    again = dstrl(*args, "--auto-resume")
    assert "final return" in again.stdout and (out / "summary.json").exists()


def test_growth_options_are_not_checked_where_nothing_grows():
    """Gradual pruning never grows: --grow gradient there was refused for a policy delay."""
    TrainConfig(algo="prune-td3", grow="gradient", actor_update_period=3).validate()
    with pytest.raises(ConfigError, match="multiple of --td3.policy-delay"):
        TrainConfig(algo="ds-td3", grow="gradient", actor_update_period=3).validate()


def test_running_out_of_memory_is_one_line_that_says_what_to_lower(tmp_path, capsys, monkeypatch):
    """A population too large for the machine was a traceback from torch's allocator."""
    from dstrl.data.replay import ReplayBuffer

    def allocate(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
            "tried to allocate 6720000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(ReplayBuffer, "__init__", allocate)
    run = tmp_path / "run"
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY]) == 1
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "note:" not in line]
    assert err.startswith("dstrl: error: out of memory ([enforce fail")
    assert err.rstrip().endswith(
        "lower what the run holds (--seeds, --buffer-size, the hidden sizes or the batch size) "
        "and start it again, with --auto-resume (it clears what this attempt left)"
    )
    monkeypatch.setattr(
        ReplayBuffer, "__init__", lambda *a, **k: (_ for _ in ()).throw(MemoryError())
    )
    assert main(["train", "--env", "Pendulum-v1", "--out", str(run), *TINY, "--auto-resume"]) == 1
    assert "dstrl: error: out of memory (MemoryError): lower" in capsys.readouterr().err
