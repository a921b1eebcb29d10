"""`dstrl sweep` end to end: a 2 x 2 grid locally (killed and resumed) and on a real Ray runtime."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import tyro

from dstrl import cli
from dstrl import sweep as sweep_module
from dstrl.checkpoint import load_checkpoint
from dstrl.config import ConfigError, TrainConfig
from dstrl.progress import Progress
from dstrl.rundir import CHECKPOINT, training_now
from dstrl.sweep import Cell, SweepArgs, execute
from tests.helpers import lock_holder

TRAIN_ARGS = (
    "--start-steps 100 --eval-every 100 --eval-episodes 1 --td3.hidden-sizes 32 32 "
    "--td3.batch-size 16 --density 0.5 --update-period 50 --checkpoint-every 100 --no-tensorboard"
)


CELL = Cell("Pendulum-v1", ("td3",), 0, None)


def sweep(out, *extra, steps=300, popen=False, train_args=TRAIN_ARGS):
    cmd = [
        sys.executable,
        "-m",
        "dstrl.cli",
        "sweep",
        "--envs",
        "Pendulum-v1",
        "--algos",
        "td3",
        "ds-td3",
        "--seeds",
        "2",
        "--steps",
        str(steps),
        "--out",
        str(out),
        f"--train-args={train_args}",
        *extra,
    ]
    if popen:
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def cells(out):
    return [out / "Pendulum-v1" / algo / f"seed{s}" for algo in ("td3", "ds-td3") for s in (0, 1)]


def test_local_sweep_survives_a_kill_and_resumes(tmp_path):
    out = tmp_path / "grid"
    process = sweep(out, "--workers", "1", steps=400, popen=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:  # wait for one stopped mid-run
        done = [c for c in cells(out) if (c / "summary.json").exists()]
        running = [
            c
            for c in cells(out)
            if (c / "checkpoint.pt").exists() and not (c / "summary.json").exists()
        ]
        if done and running:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and its training process, no clean-up
    process.wait()
    interrupted = running[0]

    result = sweep(out, "--workers", "2", steps=400)
    assert result.returncode == 0, result.stderr
    assert f"skip Pendulum-v1 {done[0].parent.name} seed {done[0].name[4:]}" in result.stdout
    for cell in cells(out):
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["steps"] == 400 and summary["evaluations"] == 4
    steps = [line.split(",")[0] for line in (interrupted / "evaluations.csv").read_text().split()]
    assert steps[1:] == ["100", "200", "300", "400"]  # resumed, nothing evaluated twice
    report = (out / "report" / "report.md").read_text()
    assert "| Pendulum-v1 | ds-td3 | 2 | 400 |" in report and "| Pendulum-v1 | td3 | 2 |" in report


def test_sigterm_to_the_sweep_alone_stops_its_runs_and_starts_no_more(tmp_path):
    """``kill`` of the sweep's pid, not its group: its run stops at a checkpoint (it used to
    train on, orphaned, holding its lock) and none of the others starts."""
    out = tmp_path / "grid"
    process = sweep(out, "--workers", "1", steps=100_000, popen=True)
    first = cells(out)[0]
    deadline = time.time() + 120
    while not (first / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.1)
    trainer = int((first / ".lock").read_text())
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr == "dstrl: interrupted; rerun the same command to continue it\n"
    assert "[1/4] stopped Pendulum-v1 td3 seed 0 by a signal" in stdout
    with pytest.raises(ProcessLookupError):
        os.kill(trainer, 0)
    assert [c.exists() for c in cells(out)] == [True, False, False, False]
    stopped = json.loads((first / "config.json").read_text())
    assert stopped["steps"] == 100_000 and not (first / "summary.json").exists()


def test_a_stopped_run_is_not_called_a_failure():
    assert (
        sweep_module._outcome(CELL, 130, "", 3.2)
        == "stopped Pendulum-v1 td3 seed 0 by a signal (3 s)"
    )
    assert sweep_module._kind(-signal.SIGTERM) == "stopped" and sweep_module._kind(1) == "failed"


def test_bad_sweeps_fail_before_running(tmp_path):
    result = sweep(tmp_path / "grid", "--envs", "NoSuch-v0")
    assert result.returncode == 2 and "unknown environment 'NoSuch-v0'" in result.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dstrl.cli",
            "sweep",
            "--out",
            str(tmp_path / "g"),
            "--train-args=--seed 3",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--train-args cannot set --seed" in result.stderr
    result = sweep(tmp_path / "grid", "--seed", "-1")
    assert result.returncode == 2 and "--seed must be in [0, 2**32 - --seeds]" in result.stderr
    result = sweep(tmp_path / "grid", "--device", "cuda:99")  # every run would fail on it
    assert result.returncode == 2 and "--device cuda:99" in result.stderr
    assert not (tmp_path / "grid").exists() and not (tmp_path / "g").exists()


def test_ray_sweep_runs_skips_and_resumes(tmp_path):
    pytest.importorskip("ray", reason="Ray is installed with the dev extra")
    out = tmp_path / "grid"
    result = sweep(out, "--backend", "ray", "--workers", "2", steps=200)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done Pendulum-v1") == 4
    assert result.stdout.count("start Pendulum-v1") == 4  # the driver printed none
    finished, stopped, lost = cells(out)[0], cells(out)[1], cells(out)[2]
    (stopped / "summary.json").unlink()  # as if stopped after its last checkpoint
    for path in lost.iterdir():
        path.unlink()
    lost.rmdir()
    result = sweep(out, "--backend", "ray", "--workers", "2", steps=300)
    assert result.returncode == 0, result.stderr
    assert "already finished" not in result.stdout  # 200 < 300 steps: all continue or start
    for cell in cells(out):
        assert json.loads((cell / "summary.json").read_text())["steps"] == 300
    assert (out / "report" / "report.md").exists() and finished.exists()


def test_a_packed_sweep_trains_each_family_as_one_population(tmp_path):
    out = tmp_path / "grid"
    result = sweep(out, "--algos", "td3", "ds-td3", "prune-td3", "--pack", "on", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "2 of 2 runs to do" in result.stdout
    packed = out / "Pendulum-v1" / "packed"
    population = json.loads((packed / "td3" / "summary.json").read_text())
    assert population["algo"] == ["td3", "ds-td3"] and population["seeds"] == [0, 1, 0, 1]
    assert json.loads((packed / "prune-td3" / "summary.json").read_text())["seeds"] == [0, 1]
    report = (out / "report" / "report.md").read_text()
    for algo in ("td3", "ds-td3", "prune-td3"):
        assert f"| Pendulum-v1 | {algo} | 2 | 300 |" in report
    again = sweep(out, "--algos", "td3", "ds-td3", "prune-td3", "--pack", "on")
    assert again.returncode == 0 and "0 of 2 runs to do" in again.stdout
    assert "skip Pendulum-v1 td3 ds-td3 seeds 0-1: already finished" in again.stdout
    # finished with other options than asked for now: named, as a resume names them
    changed = TRAIN_ARGS.replace("--start-steps 100", "--start-steps 50")
    again = sweep(out, "--algos", "td3", "ds-td3", "--pack", "on", train_args=changed)
    assert again.returncode == 2, again.stdout
    assert "--start-steps is 100 in the run, 50 here" in again.stderr
    # a damaged summary: what to do, and doing it finishes the run from its checkpoint
    summary = packed / "td3" / "summary.json"
    summary.write_text("{bad")
    again = sweep(out, "--algos", "td3", "ds-td3", "--pack", "on")
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert f"{summary} cannot be read" in again.stderr and "delete it" in again.stderr
    summary.unlink()
    # a run to continue with other options: refused before it starts, as a finished one is
    # (it started, and failed on its own; each run of a grid so, one after the other)
    again = sweep(out, "--algos", "td3", "ds-td3", "--pack", "on", train_args=changed)
    assert again.returncode == 2 and "runs to do" not in again.stdout
    assert "--start-steps is 100 in the run, 50 here" in again.stderr
    again = sweep(out, "--algos", "td3", "ds-td3", "--pack", "on")
    assert again.returncode == 0 and "1 of 1 runs to do" in again.stdout, again.stderr
    assert json.loads(summary.read_text())["steps"] == 300
    # the same grid unpacked would train every seed again beside the packed runs
    unpacked = sweep(out, "--algos", "td3", "ds-td3", "--pack", "off")
    assert unpacked.returncode == 2 and not (out / "Pendulum-v1" / "td3").exists()
    assert f"{packed} holds runs of a packed sweep; rerun with --pack on" in unpacked.stderr


def test_each_run_is_timed_on_its_own():
    """The seconds after a finished run are its own, not the sweep's so far."""
    code, error, seconds = execute([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert code == 0 and error == "" and 0.5 <= seconds < 5


def test_an_interrupted_sweep_says_how_to_continue(tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_sweep", interrupted)
    assert cli.main(["sweep", "--envs", "Pendulum-v1", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err == (
        "dstrl: interrupted; rerun the same command to continue it\n"
    )


@pytest.mark.parametrize(
    "options, says",
    [
        (["--envs", "Pendulum-v1", "Pendulum-v1"], "--envs gives Pendulum-v1 twice"),
        (["--algos", "td3", "td3"], "--algos gives td3 twice"),
        (["--address", "1.2.3.4:6379"], "--address is a Ray cluster's: give it with --backend ray"),
        (["--train-args=--no-auto-resume"], "--train-args cannot set --auto-resume"),
        (["--train-args=--bogus 1"], "--train-args: dstrl train has no option --bogus"),
        (['--train-args=--eval-every "100'], "No closing quotation"),
        (["--train-args=--grow magic"], "invalid choice 'magic' for argument '--grow'"),
        (["--train-args=--help"], "--train-args are options for every run: see dstrl train"),
        (["--progress-every", "-1"], "--progress-every must be 0 or more seconds, got -1.0"),
        (["--algos", "prune-td3", "--steps", "300"], "prune-td3 on Pendulum-v1: pruning from"),
        (["--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers there"),
    ],
)
def test_a_sweep_that_every_run_would_fail_is_one_line_before_any_run(
    tmp_path, capsys, options, says
):
    """Each was a traceback, a failure per run, or (an unreachable Ray address) a wait for
    ever, deaf to SIGTERM; grids with a duplicate trained one run twice at once."""
    out = tmp_path / "grid"
    assert cli.main(["sweep", "--envs", "Pendulum-v1", "--out", str(out), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dstrl: error: ") and err.count("\n") == 1 and says in err
    assert not out.exists()


def test_a_sweep_refuses_an_out_that_another_sweep_works_in(tmp_path, capsys):
    """Two sweeps of one grid at once started the same runs, and each reported the other's
    as failures ("already holds a run; pass --auto-resume")."""
    out = tmp_path / "grid"
    out.mkdir()
    holder = lock_holder(out)
    try:
        assert cli.main(["sweep", "--envs", "Pendulum-v1", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"another dstrl process (pid {holder.pid}) is training in {out}" in err
    finally:
        holder.kill()
        holder.wait()
    assert list(out.iterdir()) == [out / ".lock"]  # no run was started


def test_a_summary_whose_steps_are_not_a_number_is_one_line(tmp_path):
    cell = Cell("Pendulum-v1", ("td3",), 0, tmp_path / "run")
    cell.path.mkdir()
    (cell.path / "summary.json").write_text(json.dumps({"steps": "300"}))
    args = sweep_module.SweepArgs(envs=("Pendulum-v1",), algos=("td3",), steps=300)
    with pytest.raises(sweep_module.ConfigError, match=r"cannot be read \(its steps are '300'\)"):
        sweep_module.command(cell, args)


def test_a_stopped_run_longer_than_the_grid_is_one_line_before_any_run(tmp_path):
    """It started, and failed as its resume could not shorten it ("--steps can only grow")."""
    cell = Cell("Pendulum-v1", ("td3",), 0, tmp_path / "run")
    cell.path.mkdir()
    (cell.path / CHECKPOINT).write_bytes(b"")
    saved = TrainConfig(algo="td3", env="Pendulum-v1", steps=300, threads=1, out=cell.path)
    (cell.path / "config.json").write_text(json.dumps(saved.to_json()))
    args = sweep_module.SweepArgs(envs=("Pendulum-v1",), algos=("td3",), steps=200, report=False)
    with pytest.raises(sweep_module.ConfigError) as caught:
        sweep_module.command(cell, args)
    assert str(caught.value) == (
        f"{cell.path} is a stopped run of 300 steps, more than --steps 200, and a resume cannot "
        "shorten it: give --steps 300"
    )
    assert sweep_module.command(cell, replace(args, steps=300)) is not None  # it resumes


def test_a_run_killed_by_the_system_and_the_failed_runs_are_named(tmp_path):
    """'its last checkpoint is kept' was said of a run that had written none."""
    cell = Cell("Pendulum-v1", ("td3",), 0, tmp_path / "seed0")
    assert sweep_module._outcome(cell, -signal.SIGKILL, "", 2.0) == (
        "FAILED Pendulum-v1 td3 seed 0 (exit -9): killed by SIGKILL (out of memory?); it had "
        f"written no checkpoint: a rerun starts it afresh; its log: {tmp_path / 'seed0.log'}"
    )
    cell.path.mkdir()
    (cell.path / CHECKPOINT).write_bytes(b"")
    assert sweep_module._outcome(cell, -signal.SIGKILL, "", 2.0) == (
        "FAILED Pendulum-v1 td3 seed 0 (exit -9): killed by SIGKILL (out of memory?); its last "
        f"checkpoint is kept; its log: {tmp_path / 'seed0.log'}"
    )
    failed = [Cell("Pendulum-v1", ("td3",), seed, None) for seed in range(7)]
    assert sweep_module._unfinished({"failed": failed, "stopped": failed[:1]}) == (
        "7 run(s) failed (Pendulum-v1 td3 seed 0, Pendulum-v1 td3 seed 1, Pendulum-v1 td3 seed "
        "2, Pendulum-v1 td3 seed 3, Pendulum-v1 td3 seed 4 and 2 more) and 1 stopped by a "
        "signal; fix the cause and rerun the same command to continue"
    )


def test_how_a_run_ended_counts_what_it_wrote(tmp_path, capsys):
    """A run whose summary was written as the signal came was 'stopped' (exit 130, no report);
    one with some agents diverged (exit 3) was a failure, though it had finished; one whose
    every agent diverged got the advice to rerun, which continues it into the same divergence."""
    cell = Cell("Pendulum-v1", ("td3",), 0, tmp_path / "seed0")
    cell.path.mkdir()
    (cell.path / "config.json").write_text(json.dumps({"steps": 300}))
    ended: dict = {"done": [], "stopped": [], "failed": [], "diverged": []}
    progress = Progress([cell.path], 300, 1)
    sweep_module._report(cell, (3, "an error", 5.0), ended, 3, progress)
    assert ended["diverged"] == [cell]
    assert sweep_module._unfinished(ended) == (
        "1 run(s) diverged (Pendulum-v1 td3 seed 0): a rerun continues them with the settings "
        "they diverged with; delete their directories to train them afresh, or sweep other "
        "--train-args into another --out"
    )
    summary = {"steps": 300, "final_return": {"mean": -100.0}, "diverged": [{"member": 1}]}
    (cell.path / "summary.json").write_text(json.dumps(summary))
    sweep_module._report(cell, (130, "", 5.0), ended, 3, progress)
    sweep_module._report(cell, (3, "", 5.0), ended, 3, progress)
    assert ended["done"] == [cell, cell] and not ended["stopped"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (  # not FAILED, as the last line's advice is a diverged run's
        f"[1/3] diverged Pendulum-v1 td3 seed 0 (exit 3): an error; its log: {cell.log}"
    )
    assert lines[1] == (
        "[2/3] done Pendulum-v1 td3 seed 0: final return td3 -100.0 (5 s); 1 agent(s) diverged, "
        "left out of the report"
    )


def test_a_runs_stderr_is_kept_in_its_log_and_its_notes_are_passed_on(tmp_path):
    """Only three lines of a failed run's stderr were shown, and kept nowhere; its notes (λ that
    leave a sparse method dense, say) were never shown."""
    go = tmp_path / "go"  # the run goes on only once its note has been passed on (or in 60 s)
    run = "import os, sys, time\nprint('dstrl: note: all dense', file=sys.stderr, flush=True)\n"
    run += f"end = time.time() + 60\nwhile not os.path.exists({str(go)!r}) and time.time() < end:\n"
    run += "    time.sleep(0.05)\nprint('Traceback\\n  line\\nKeyError: 1', file=sys.stderr)\n"
    run += "sys.exit(1)"
    log, notes = tmp_path / "cell.log", []

    def noted(note):
        notes.append(note)
        go.touch()

    for _ in range(2):  # a rerun appends
        go.unlink(missing_ok=True)
        code, error, seconds = execute([sys.executable, "-c", run], log=log, noted=noted)
        assert code == 1 and error == "Traceback |   line | KeyError: 1"
        assert seconds < 30  # the note came while the run went on, not when it ended
    text = log.read_text()
    assert text.count(f"$ {sys.executable} -c ") == 2 and text.count("\nKeyError: 1\n") == 2
    assert notes == ["all dense", "all dense"]


def test_a_stopped_sweep_stops_each_run_with_sigterm_and_starts_none():
    """The one mechanism of both backends: a stop asked for between the runs' one-second
    waits."""
    run = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(130))\n"
    run += "print('stopping', file=sys.stderr); time.sleep(60)"
    began = time.monotonic()
    asked = iter([False, True])
    code, error, seconds = execute([sys.executable, "-c", run], lambda: next(asked, True))
    assert code == 130 and error == "stopping" and time.monotonic() - began < 10
    starts = []  # a run's "start" line is said only if it starts
    assert execute([sys.executable, "-c", run], lambda: True, lambda: starts.append(1)) is None
    assert execute([sys.executable, "-c", "pass"], starting=lambda: starts.append(2))[0] == 0
    assert starts == [2]


def test_one_worker_says_each_runs_end_before_the_next_start(tmp_path, monkeypatch, capsys):
    """The driver said a run's end once it woke, after the worker had started the next run:
    two runs at once, as it read."""

    def instant(cmd, stopped, starting, log=None, noted=None):
        starting()
        return 1, "no message", 0.0

    monkeypatch.setattr(sweep_module, "execute", instant)
    cells = [Cell("Pendulum-v1", ("td3",), seed, tmp_path / f"s{seed}") for seed in range(20)]
    progress = Progress([cell.path for cell in cells], 100, 1)
    ended = sweep_module._run_local([(cell, []) for cell in cells], 1, progress)
    assert len(ended["failed"]) == 20
    said = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert said == [word for i in range(20) for word in ("start", f"[{i + 1}/20]")]


def test_new_runs_of_a_grid_are_refused_other_settings_than_its_runs(tmp_path):
    """A rerun without the grid's --train-args trained the new seeds with dstrl train's
    defaults, and the report split the grid in two."""
    args = SweepArgs(envs=("Pendulum-v1",), algos=("td3", "rlx2-td3"), seeds=1, steps=300)
    args = replace(args, train_args=TRAIN_ARGS, out=tmp_path)
    for kept in sweep_module.plan(args):
        kept.path.mkdir(parents=True)
        options = ["--steps", "300", *sweep_module._train_options(kept, args)]
        config = tyro.cli(TrainConfig, args=options, console_outputs=False)
        (kept.path / "config.json").write_text(json.dumps(config.to_json()))
    # the grid's options: new seeds, also of a longer grid, where RLx2's defaults follow --steps
    assert len(sweep_module.plan(replace(args, seeds=2, steps=600))) == 4
    with pytest.raises(ConfigError, match="Pendulum-v1 td3 seed 1 would train with other") as e:
        sweep_module.plan(replace(args, algos=("td3",), seeds=2, train_args=""))
    assert "start_steps 100 there, 25000 here" in str(e.value)
    assert str(e.value).endswith("give the grid's --train-args again, or another --out")


def test_a_cpu_device_by_index_is_not_packed(tmp_path):
    """--device cpu:0 was packed as a GPU is, and --device cpu then refused the grid."""
    args = sweep_module.SweepArgs(envs=("Pendulum-v1",), algos=("td3",), device="cpu:0")
    assert [c.seeds for c in sweep_module.plan(args)] == [1, 1, 1]


@pytest.mark.parametrize("ctrl_c", [False, True])
def test_sigterm_or_ctrl_c_to_a_ray_sweep_stops_its_runs_at_checkpoints(tmp_path, ctrl_c):
    """Ray's own handlers: on SIGTERM it aborted the driver with a stack dump (exit 134) and
    its runs were killed, losing the steps since their last checkpoint; after Ctrl-C to the
    process group it waited for ever while the runs trained on."""
    pytest.importorskip("ray", reason="Ray is installed with the dev extra")
    out = tmp_path / "grid"
    process = sweep(out, "--backend", "ray", "--workers", "2", steps=100_000, popen=True)
    first = cells(out)[0]
    deadline = time.time() + 180
    while not (first / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.2)
    if ctrl_c:
        os.killpg(process.pid, signal.SIGINT)  # the sweep, and Ray's processes in its group
    else:
        process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.endswith("dstrl: interrupted; rerun the same command to continue it\n")
    stopped = [line for line in stdout.splitlines() if "by a signal" in line]
    assert len(stopped) == 2, stdout  # the two running; the other two never started
    started = [cell for cell in cells(out) if cell.exists()]
    assert len(started) == 2
    for cell in started:  # each checkpointed when it stopped: no step is lost
        rows = (cell / "evaluations.csv").read_text().split()[1:]
        assert load_checkpoint(cell)["step"] >= max(int(row.split(",")[0]) for row in rows)


def test_a_population_cannot_take_other_members(tmp_path):
    """Adding seeds to a packed grid was refused with a resume's advice, "give the saved values
    or leave them out", which fails the same way."""
    population = tmp_path / "grid" / "Pendulum-v1" / "packed" / "td3"
    population.mkdir(parents=True)
    saved = {"algo": ["td3", "ds-td3"], "env": "Pendulum-v1", "seed": 0, "seeds": 2}
    (population / "config.json").write_text(json.dumps(saved))
    args = sweep_module.SweepArgs(
        envs=("Pendulum-v1",), algos=("td3", "ds-td3"), seeds=3, out=tmp_path / "grid", pack="on"
    )
    with pytest.raises(sweep_module.ConfigError) as caught:
        sweep_module.plan(args)
    assert str(caught.value) == (
        f"{population} trains td3 ds-td3 seeds 0-1 as one population, which cannot change its "
        "members to td3 ds-td3 seeds 0-2: sweep other algorithms or seeds into another --out"
    )
    assert len(sweep_module.plan(replace(args, seeds=2))) == 1
    # the same members named in another order: the population as it is, not a refusal
    reordered = replace(args, seeds=2, algos=("ds-td3", "td3"))
    (cell,) = sweep_module.plan(reordered)
    assert cell.algos == ("td3", "ds-td3")
    train = sweep_module.command(cell, reordered)
    assert train[train.index("--algo") + 1 : train.index("--algo") + 3] == ["td3", "ds-td3"]
    # a new env's population too: in the grid's order, so that its settings compare with it
    wider = replace(reordered, envs=("Pendulum-v1", "InvertedPendulum-v5"))
    assert [c.algos for c in sweep_module.plan(wider)] == [("td3", "ds-td3")] * 2


def test_the_report_of_a_sweep_is_of_its_own_grid(tmp_path):
    """It reported every run under --out: extending a part of a grid failed on the runs left
    out ("different step budgets"), after every run had finished."""
    out = tmp_path / "grid"
    assert sweep(out, "--seeds", "1", steps=200).returncode == 0
    extended = sweep(out, "--seeds", "1", "--algos", "td3", steps=300)
    assert extended.returncode == 0, extended.stdout + extended.stderr
    assert "start Pendulum-v1 td3 seed 0 (continues from its checkpoint)\n" in extended.stdout
    table = (out / "report" / "report.csv").read_text()
    assert "td3" in table and "ds-td3" not in table
    # td3 has now trained more than the grid's 200 steps: its report would fail after the runs
    again = sweep(out, "--seeds", "1", steps=200)
    assert again.returncode == 2 and "start" not in again.stdout
    assert again.stderr == (
        f"dstrl: error: {out / 'Pendulum-v1' / 'td3' / 'seed0'} has trained 300 steps, more than "
        "--steps 200, and the report compares runs of one budget: give --steps 300, or "
        "--no-report\n"
    )
    assert sweep(out, "--seeds", "1", "--no-report", steps=200).returncode == 0


def test_a_sweep_says_how_far_it_has_come_and_how_long_the_rest_will_take(tmp_path):
    """Between its first line and the first finished run, hours passed in silence."""
    result = sweep(
        tmp_path / "grid",
        "--seeds",
        "1",
        "--workers",
        "1",
        "--progress-every",
        "0.5",
        "--no-report",
        train_args=TRAIN_ARGS + " --log-every 50",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("progress: ")]
    assert lines and all(" of 600 steps, " in line for line in lines)
    assert any(line.endswith(" left") and ", about " in line for line in lines), lines


def test_a_sweep_killed_outright_stops_its_runs_at_checkpoints(tmp_path):
    """SIGKILL to the sweep alone (the out-of-memory killer's) left its runs training as
    orphans; its rerun then failed them ("another dstrl process is training")."""
    out = tmp_path / "grid"
    process = sweep(out, "--workers", "1", steps=1_000_000, popen=True)  # hours: never done
    first = cells(out)[0]
    deadline = time.time() + 180
    while not (first / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.2)
    process.kill()  # the sweep alone
    process.communicate(timeout=60)
    deadline = time.time() + 60
    while training_now(first) is not None:  # the run, told by the kernel, checkpoints and ends
        assert time.time() < deadline, "the run trains on without its sweep"
        time.sleep(0.2)
    rows = (first / "evaluations.csv").read_text().split()[1:]
    steps = [int(row.split(",")[0]) for row in rows]
    assert load_checkpoint(first)["step"] >= max(steps, default=0)  # no step lost
