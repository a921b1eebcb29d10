"""Run directories under stress: full disks, bad --out, a second writer, requeued jobs."""

import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import dstrl.train as dstrl_train
from dstrl import logs
from dstrl.cli import main
from dstrl.logs import CsvLog
from dstrl.rundir import RunDirError, exclusive, training_now, write_atomic
from dstrl.train import train
from tests.helpers import lock_holder, tiny_config

TINY = ["--env", "Pendulum-v1", "--steps", "400", "--start-steps", "100", "--eval-every", "200"]
TINY += ["--eval-episodes", "1", "--checkpoint-every", "100", "--update-period", "50"]
TINY += ["--td3.hidden-sizes", "32", "32", "--td3.batch-size", "32", "--lambdas", "1", "8"]
TINY += ["--no-progress", "--no-tensorboard"]


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_temporary_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_atomic(run / "checkpoint.pt", b"the previous checkpoint")
    (run / "checkpoint.pt.tmp").symlink_to("/dev/full")  # every write there: ENOSPC
    with pytest.raises(RunDirError, match="cannot write .*checkpoint.pt: No space left on device"):
        write_atomic(run / "checkpoint.pt", lambda f: torch.save({"x": torch.zeros(10**5)}, f))
    assert (run / "checkpoint.pt").read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]


class _FillsUp:
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def flush(self):
        self.file.flush()


@pytest.mark.parametrize("room", [100, 5_000, 300_000])
def test_a_disk_that_fills_up_inside_a_checkpoint_is_a_write_failure(tmp_path, room):
    """torch's zip writer raises a RuntimeError ("unexpected pos") while handling the OSError:
    still one line that names the file and the cause, and the old checkpoint stays."""
    path = tmp_path / "checkpoint.pt"
    write_atomic(path, b"the previous checkpoint")
    state = {"replay": torch.zeros(10**5), "step": 300}
    with pytest.raises(RunDirError, match="cannot write .*checkpoint.pt: No space left on device"):
        write_atomic(path, lambda f: torch.save(state, _FillsUp(f, room)))
    assert path.read_bytes() == b"the previous checkpoint" and not list(tmp_path.glob("*.tmp"))


def _limit_file_size(size):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_a_failing_write_mid_run_is_one_line_and_resume_finishes_the_run(tmp_path):
    """A real write failure from the kernel: files may not grow past a size between the
    checkpoints of steps 200 and 300 (the replay buffer grows them), so the third one fails."""
    run, whole = tmp_path / "run", tmp_path / "whole"
    assert main(["train", *TINY, "--out", str(whole)]) == 0
    sizes = []
    for step in (200, 300):
        train(tiny_config(tmp_path / f"s{step}", checkpoint_every=100), stop_after=step)
        sizes.append((tmp_path / f"s{step}" / "checkpoint.pt").stat().st_size)
    result = subprocess.run(
        [sys.executable, "-m", "dstrl.cli", "train", *TINY, "--out", str(run)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(sum(sizes) // 2),
    )
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "cannot write" in line and "checkpoint.pt: File too large" in line
    assert "the checkpoint of step 200 is intact" in line
    assert f"dstrl train --out {run} --resume" in line
    assert torch.load(run / "checkpoint.pt")["step"] == 200
    assert not list(run.glob("*.tmp"))
    assert main(["train", "--out", str(run), "--resume"]) == 0
    for log in ("evaluations.csv", "train_metrics.csv"):
        assert _without_timing(run / log) == _without_timing(whole / log)


def _without_timing(path):
    rows = path.read_text().splitlines()
    if "env_steps_per_second" not in rows[0]:
        return rows
    return [row.rsplit(",", 1)[0] for row in rows]  # the last column is the wall-clock one


def test_log_rows_are_on_disk_before_the_checkpoint_that_follows_them(tmp_path, monkeypatch):
    synced = []  # the files os.fsync was given

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(logs.os, "fsync", fsync)
    log = CsvLog(tmp_path / "evaluations.csv", ["step", "return"])
    log.write([{"step": 1, "return": 2.0}])
    assert synced == [str(tmp_path / "evaluations.csv")]


def test_a_log_that_cannot_be_written_stops_the_run_with_one_line(tmp_path, monkeypatch, capsys):
    """A full disk's failed write names no file; the line said "cannot write No space left"."""

    def full(self, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(logs.csv.DictWriter, "writerows", full)
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 1
    line = _one_line(capsys.readouterr().err)
    # the first log row is the evaluation at step 200, after the checkpoint of step 100
    assert "cannot write" in line and "evaluations.csv: No space left on device" in line
    assert "the checkpoint of step 100 is intact" in line


@pytest.mark.parametrize("fails", ["at once", "at the last event"])
def test_tensorboard_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys, fails):
    """Its writer thread raised the failure itself as well ("Exception in thread", a
    traceback); a failure of the last event, which no later write reports, was lost."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    from tensorboard.summary.writer.record_writer import RecordWriter

    real, written = RecordWriter.write, []
    args = ["train", *TINY[:-1], "--out"]  # with TensorBoard
    monkeypatch.setattr(RecordWriter, "write", lambda self, data: written.append(data))
    assert main([*args, str(tmp_path / "count")]) == 0
    room = [0 if fails == "at once" else len(written) - 1]

    def write(self, data):
        room[0] -= 1
        if room[0] < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    raised_in_threads = []
    monkeypatch.setattr(threading, "excepthook", raised_in_threads.append)
    capsys.readouterr()
    assert main([*args, str(tmp_path / "run")]) == 1
    for thread in threading.enumerate():
        if isinstance(thread, _AsyncWriterThread):
            thread.join(5)
    assert raised_in_threads == []
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("dstrl: error: cannot write") and "tensorboard: No space left" in line


@pytest.mark.parametrize("case", ["under a file", "a file", "no permission"])
def test_an_out_that_cannot_be_a_directory_is_one_line(tmp_path, monkeypatch, capsys, case):
    blocker = tmp_path / "passwd"
    blocker.write_text("not a directory")
    out = {"under a file": blocker / "x", "a file": blocker, "no permission": tmp_path / "ro"}
    if case == "no permission":  # as a read-only mount or another user's directory would do

        def refuse(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

        monkeypatch.setattr(type(tmp_path), "mkdir", refuse)
    assert main(["train", *TINY, "--out", str(out[case])]) == 1
    line = _one_line(capsys.readouterr().err)
    expected = {
        "under a file": f"cannot be created: {blocker} is a file",
        "a file": "is a file, not a directory",
        "no permission": "ro cannot be created: ",
    }
    assert expected[case] in line
    assert case != "no permission" or line.endswith("ro: Permission denied")


@pytest.mark.parametrize("algo", ["ds-td3", "static-td3", "ds-sac"])
def test_sparse_methods_train_where_er_makes_every_layer_dense(tmp_path, capsys, algo):
    family = algo.split("-")[1]
    args = ["train", "--algo", algo, "--env", "Pendulum-v1", f"--{family}.hidden-sizes", "64", "64"]
    args += ["--steps", "300", "--start-steps", "100", "--eval-every", "300"]
    args += ["--eval-episodes", "1", "--no-progress", "--no-tensorboard"]
    args += [] if algo.startswith("static") else ["--update-period", "50"]  # due in the run
    args += ["--sac.target-update-interval", "50"] if family == "sac" else []
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    note = _one_line(capsys.readouterr().err)
    assert note.startswith("dstrl: note:") and f"so {algo} trains dense networks" in note
    assert "--lambdas below" in note and "(hidden)" in note and "--density D < 1" in note
    # and the λ it names do make the hidden layers sparse
    hidden = float(re.search(r"([\d.]+) \(hidden\)", note).group(1))
    lambdas = ["--lambdas", "1", str(hidden * 0.9)]
    assert main([*args, *lambdas, "--out", str(tmp_path / "sparse")]) == 0
    assert "note" not in capsys.readouterr().err


def _evaluations(run_dir):
    return (run_dir / "evaluations.csv").read_text()


def test_resume_accepts_the_command_that_started_the_run(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")]
    assert train(tiny_config(tmp_path / "run", checkpoint_every=100), stop_after=200) is None
    assert main(["train", *TINY, *out, "--resume"]) == 0  # every value as saved
    assert main(["train", *TINY, "--out", str(tmp_path / "whole")]) == 0
    assert _evaluations(tmp_path / "run") == _evaluations(tmp_path / "whole")
    capsys.readouterr()
    changed = [*TINY, *out, "--resume", "--td3.batch-size", "64", "--lambdas", "1", "9"]
    assert main(["train", *changed]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--lambdas is 1 8 in the run, 1 9 here" in line
    assert "--td3.batch-size is 32 in the run, 64 here" in line


def test_auto_resume_starts_continues_and_restarts_a_run_that_never_checkpointed(tmp_path):
    whole = tmp_path / "whole"
    assert main(["train", *TINY, "--out", str(whole)]) == 0

    def command(run):
        return ["train", *TINY, "--out", str(run), "--auto-resume"]

    assert main(command(tmp_path / "new")) == 0  # nothing there yet: it starts
    assert _evaluations(tmp_path / "new") == _evaluations(whole)
    # killed before its first checkpoint: what it left is cleared and the run starts again
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.json").write_text("{half a conf")
    (killed / "evaluations.csv").write_text("step,member,seed,return\n100,0,0,-1\n")
    (killed / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    assert main(command(killed)) == 0
    assert _evaluations(killed) == _evaluations(whole)
    # stopped after a checkpoint: it continues
    stopped = tmp_path / "stopped"
    assert train(tiny_config(stopped, checkpoint_every=100), stop_after=250) is None
    assert main(command(stopped)) == 0
    assert _evaluations(stopped) == _evaluations(whole)
    assert main(command(stopped)) == 0  # finished: nothing to do but the summary
    assert _evaluations(stopped) == _evaluations(whole)


def test_auto_resume_of_a_finished_run_without_its_checkpoint_has_nothing_to_do(tmp_path, capsys):
    """A checkpoint deleted to save space: a requeued job's rerun was refused as "files that are
    not an unfinished dstrl run" with exit 1."""
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    (run / "checkpoint.pt").unlink()
    capsys.readouterr()
    for resume in ("--auto-resume", "--resume"):
        assert main(["train", *TINY, "--out", str(run), resume]) == 0
        assert capsys.readouterr().out == f"{run} has finished its 400 steps; nothing to do\n"
    assert main(["train", *TINY, "--out", str(run), "--auto-resume", "--steps", "500"]) == 2
    assert "but the run finished (summary.json)" in _one_line(capsys.readouterr().err)


def test_auto_resume_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--out", str(tmp_path), "--auto-resume"]) == 1
    assert "not an unfinished dstrl run (notes.txt)" in _one_line(capsys.readouterr().err)
    assert (tmp_path / "notes.txt").exists()


def test_auto_resume_clears_no_file_of_the_users_inside_tensorboard(tmp_path, capsys):
    """The cleared tensorboard/ of a run killed before its first checkpoint went whole, with
    whatever a user had put there."""
    events = tmp_path / "tensorboard"
    events.mkdir()
    (events / "events.out.tfevents.1795839768.host.1.0").write_bytes(b"")
    (events / "my-notes.md").write_text("mine")
    assert main(["train", *TINY, "--out", str(tmp_path), "--auto-resume"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "not an unfinished dstrl run (tensorboard/my-notes.md)" in line
    assert (events / "my-notes.md").exists()
    (events / "my-notes.md").unlink()  # TensorBoard's own files alone: cleared, and it starts
    assert main(["train", *TINY, "--out", str(tmp_path), "--auto-resume"]) == 0


def test_a_new_run_in_a_directory_of_other_files_is_refused_before_any_note(tmp_path, capsys):
    """Not advice to --auto-resume, which would refuse it too; and no note (here: a warm-up
    as long as the run) before the error."""
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--start-steps", "400", "--out", str(tmp_path)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"dstrl: error: {tmp_path} holds files that are not an unfinished")
    assert "choose another --out" in line and (tmp_path / "notes.txt").exists()


def test_a_second_process_on_the_same_run_is_refused_until_the_first_dies(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = lock_holder(run)
    try:
        assert main(["train", *TINY, "--out", str(run), "--auto-resume"]) == 1
        line = _one_line(capsys.readouterr().err)
        assert f"another dstrl process (pid {holder.pid}) is training in {run}" in line
    finally:
        holder.kill()  # a killed holder leaves no stale lock behind
        holder.wait()
    assert main(["train", *TINY, "--out", str(run), "--auto-resume"]) == 0


def test_a_run_training_before_its_first_checkpoint_is_named_as_training(tmp_path, capsys):
    """Asked about a run that another process is training but has not checkpointed yet, eval
    and --resume said it never reached its first checkpoint (start it afresh with
    --auto-resume), a new train told to pass --auto-resume, and report to resume it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny_config(run).to_json()))
    (run / "evaluations.csv").write_text("step,member,seed,return,method\n")  # as a run starts
    holder = lock_holder(run)
    training = f"the run is training (pid {holder.pid}) and has not reached its first checkpoint"
    try:
        for command, code, says in [
            (["eval", str(run)], 2, training),
            (["export", str(run), "--out", str(tmp_path / "p.pt")], 2, training),
            (["train", "--out", str(run), "--resume"], 1, f"(pid {holder.pid}) is training in"),
            (["train", *TINY, "--out", str(run)], 1, f"(pid {holder.pid}) is training in {run}"),
            (["report", str(run), "--out", str(tmp_path / "r")], 2, f"(pid {holder.pid}); report"),
        ]:
            assert main(command) == code
            assert says in _one_line(capsys.readouterr().err)
        assert training_now(run) == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    assert training_now(run) is None
    assert main(["eval", str(run)]) == 2
    assert "never reached its first checkpoint" in _one_line(capsys.readouterr().err)
    assert main(["train", *TINY, "--out", str(run)]) == 2
    assert "pass --auto-resume to start it afresh" in _one_line(capsys.readouterr().err)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_run_killed_with_environment_workers_leaves_neither_lock_nor_workers(tmp_path):
    """SIGKILL (or the OOM killer) gives no chance to end the workers: they must not keep the
    run directory locked, and they end by themselves once their training process is gone."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from dstrl.rundir import exclusive\n"
            "from dstrl.data.envs import make_vector_env\n"
            f"with exclusive(Path({str(run)!r})):\n"
            "    envs = make_vector_env('Pendulum-v1', 4, 2)\n"
            "    print(*[p.pid for p in envs._processes], flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    workers = [int(pid) for pid in holder.stdout.readline().split()]
    assert len(workers) == 2 and all(_running(pid) for pid in workers)
    holder.kill()
    holder.wait()
    with exclusive(run):  # at once: no worker holds the lock
        pass
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in workers)


def test_a_stale_temporary_file_is_removed_on_resume(tmp_path):
    run = tmp_path / "run"
    assert train(tiny_config(run, steps=400, checkpoint_every=100), stop_after=200) is None
    # a summary is only written at the end, so only the clean-up at start can remove this one
    (run / "summary.json.tmp").write_bytes(b"from a process killed mid-write")
    config = tiny_config(run, steps=400, checkpoint_every=100, resume=True)
    assert train(config, stop_after=250) is None
    assert not list(run.glob("*.tmp"))


@pytest.mark.parametrize("cut", ["emptied", "half"])
def test_a_resume_whose_evaluations_csv_was_cut_short_is_refused(tmp_path, capsys, cut):
    """An emptied or half-written file was taken: the report then read NaN, or other numbers
    than the summary's."""
    run = tmp_path / "run"
    assert train(tiny_config(run, checkpoint_every=100, eval_every=100), stop_after=300) is None
    path = run / "evaluations.csv"
    text = path.read_text()
    path.write_text("" if cut == "emptied" else text[: len(text) // 2])
    assert main(["train", "--out", str(run), "--resume"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{path} holds " in line and "evaluations up to step 300, the checkpoint 3" in line
    assert "cut short or emptied; put the whole file back" in line


def test_an_extension_stopped_before_it_begins_leaves_an_unfinished_run(tmp_path, monkeypatch):
    """An extension cut the finished run's logs back to its checkpoint before it dropped the
    summary: a full disk (or a kill) in between left a finished run whose last evaluation was
    gone, which the report and the sweep took as finished."""
    run = tmp_path / "run"
    config = tiny_config(run, steps=400, eval_every=150)  # evaluations 150, 300 and 400
    train(config)
    truncate = CsvLog.truncate_after

    def full(self, step):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CsvLog, "truncate_after", full)
    extended = tiny_config(run, steps=600, eval_every=150, resume=True)
    with pytest.raises(RunDirError, match=r"checkpoint of step 400 is intact.*--resume$"):
        train(extended)
    assert not (run / "summary.json").exists()  # unfinished, as its config.json says
    assert json.loads((run / "config.json").read_text())["steps"] == 600
    monkeypatch.setattr(CsvLog, "truncate_after", truncate)
    assert train(extended)["steps"] == 600
    assert sorted(CsvLog(run / "evaluations.csv", []).steps()) == [150, 300, 450, 600]


def test_a_resume_without_its_evaluations_csv_is_refused(tmp_path, capsys):
    """It went on and wrote the evaluations from the checkpoint on only: its summary (from the
    checkpoint's history) and its report (from the file) then disagreed."""
    run = tmp_path / "run"
    assert train(tiny_config(run, checkpoint_every=100), stop_after=300) is None
    (run / "evaluations.csv").unlink()
    assert main(["train", "--out", str(run), "--resume"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{run}/evaluations.csv is missing, and the checkpoint of step 300" in line
    assert not (run / "evaluations.csv").exists()


def test_a_lock_whose_pid_cannot_be_written_names_the_file(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(RunDirError, match=r"^cannot write .*\.lock: No space left on device"):
        with exclusive(tmp_path):
            pass


def test_a_summary_that_cannot_be_written_says_how_to_write_it_later(tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = tiny_config(run, steps=200, eval_every=100)
    real = dstrl_train.write_atomic

    def full(path, *args):
        if path.name == "summary.json":
            raise RunDirError(f"cannot write {path}: No space left on device")
        return real(path, *args)

    monkeypatch.setattr(dstrl_train, "write_atomic", full)
    with pytest.raises(RunDirError, match=r"No space left on device; the checkpoint of step 200"):
        train(config)
    monkeypatch.setattr(dstrl_train, "write_atomic", real)
    assert train(replace(config, resume=True))["steps"] == 200  # as the line says


def test_auto_resume_says_what_it_clears(tmp_path, capsys):
    """A run directory left by an attempt killed before its first checkpoint is cleared and
    started afresh: it was done without a word."""
    run = tmp_path / "run"
    assert train(tiny_config(tmp_path / "done", checkpoint_every=100), stop_after=300) is None
    run.mkdir()  # what an attempt killed before its first checkpoint leaves
    for name in ("config.json", "evaluations.csv", "train_metrics.csv"):
        shutil.copy(tmp_path / "done" / name, run / name)
    capsys.readouterr()
    assert main(["train", *TINY, "--out", str(run), "--auto-resume"]) == 0
    err = capsys.readouterr().err
    assert f"dstrl: note: {run} has no checkpoint: clearing what its last attempt left" in err
    assert "evaluations.csv" in err and "train_metrics.csv" in err


def test_a_removed_checkpoint_is_told_apart_from_none_written(tmp_path, capsys):
    """--auto-resume cleared a run whose checkpoint had been removed (not copied back from a
    cluster, say) and trained it from step 0; --resume said it never reached one."""
    run = tmp_path / "run"
    assert train(tiny_config(run, checkpoint_every=100), stop_after=300) is None
    (run / "checkpoint.pt").unlink()
    for command in (["--resume"], [*TINY, "--auto-resume"]):
        assert main(["train", "--out", str(run), *command]) == 2
        line = _one_line(capsys.readouterr().err)
        assert line.endswith(
            f"{run}/checkpoint.pt was written and has been removed since: put "
            f"it back to continue the run, or delete {run} to train it afresh"
        )
    assert (run / "evaluations.csv").read_text().count("\n") > 1  # nothing cleared


def test_a_first_checkpoint_that_failed_leaves_a_run_to_start_again(tmp_path, monkeypatch):
    """A full disk at the first checkpoint: the run says to start it again with --auto-resume,
    which must then do so (a guess from the logs refused it)."""
    run = tmp_path / "run"
    save = torch.save

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunDirError, match="start the run again with --auto-resume"):
        train(tiny_config(run, checkpoint_every=200, eval_every=200))
    monkeypatch.setattr(torch, "save", save)
    assert train(tiny_config(run, checkpoint_every=200, eval_every=200, auto_resume=True))
