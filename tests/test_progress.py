"""A sweep's progress lines: steps read from the runs' metrics, and the time left scheduled as
the sweep schedules its runs."""

from dstrl import progress as progress_module
from dstrl.progress import Progress, duration, finish_in, steps_done


def metrics(run, *steps, cut=""):
    run.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{step},0.5,{'1' * 40}\n" for step in steps)
    (run / "train_metrics.csv").write_text("step,critic_loss,wide\n" + rows + cut)


def test_steps_done_is_the_last_rows_step(tmp_path):
    assert steps_done(tmp_path / "none") == 0  # not started
    metrics(tmp_path / "a")
    assert steps_done(tmp_path / "a") == 0  # the header alone
    metrics(tmp_path / "b", 1000, 2000, cut="30")  # a row still being written: not yet
    assert steps_done(tmp_path / "b") == 2000
    metrics(tmp_path / "c", *range(1000, 3_000_000, 1000))  # larger than the tail read
    assert (tmp_path / "c" / "train_metrics.csv").stat().st_size > progress_module.TAIL
    assert steps_done(tmp_path / "c") == 2_999_000


def test_the_time_left_schedules_runs_on_the_first_free_worker():
    assert finish_in([10, 10, 10], workers=2) == 20
    assert finish_in([30, 10, 10, 10], workers=2) == 30  # three short ones beside a long one
    assert finish_in([5, 20], workers=4) == 20 and finish_in([], workers=2) == 0
    assert [duration(s) for s in (40, 720, 7500)] == ["40 s", "12 min", "2 h 05 min"]


def test_progress_lines_say_the_share_done_and_the_time_left(tmp_path, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    runs = [tmp_path / name for name in ("resumed", "fresh", "queued")]
    metrics(runs[0], 1000, 2000)  # 2,000 of 10,000 steps before the sweep
    progress = Progress(runs, steps=10_000, workers=2, every=60)
    progress.start(runs[0])
    progress.start(runs[1])
    assert progress.due() is None  # not a minute yet
    now[0] += 30
    assert progress.line() == "progress: 7% of 30,000 steps, 30 s in, time left not known yet"
    metrics(runs[0], 2000, 5000)
    metrics(runs[1], 1000, 3000)
    now[0] += 30  # 6,000 steps in 2 x 60 run-seconds: 50 steps/s per run
    line = progress.due()
    # left: 5,000 and 7,000 steps running, then 10,000 queued on the first free worker
    assert line == "progress: 27% of 30,000 steps, 1 min in, about 5 min left"
    assert progress.due() is None  # said a moment ago
    progress.end(runs[0], finished=True)
    now[0] += 60
    assert progress.line().startswith("progress: 43% of 30,000 steps, 2 min in, about ")
    assert Progress(runs, steps=10_000, workers=2, every=0).due() is None  # lines off


def test_a_resumed_run_counts_from_its_checkpoint_and_running_runs_each_have_a_slot(
    tmp_path, monkeypatch
):
    """A resumed run cuts its metrics back to its checkpoint: the estimate waited for it to pass
    its old last row, then ran many times over. On a Ray cluster more runs may run at once than
    the driver has cores: they were queued behind each other."""
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    runs = [tmp_path / name for name in ("resumed", "other")]
    metrics(runs[0], 1000, 2000, 3000)  # checkpointed at 2,000, killed at 3,000
    progress = Progress(runs, steps=10_000, workers=1)
    progress.start(runs[0])
    progress.start(runs[1])
    metrics(runs[0], 1000, 2000)  # the resume's first act
    now[0] = 10.0
    assert progress.line().endswith("time left not known yet")
    metrics(runs[0], 1000, 2000, 3000)
    metrics(runs[1], 1000)
    now[0] = 20.0  # 1,000 + 1,000 steps in 2 x 20 run-seconds: 50 steps/s per run
    # each on a slot of its own: 7,000 and 9,000 steps left, not 16,000 one after the other
    assert progress.line() == "progress: 20% of 20,000 steps, 20 s in, about 3 min left"
    assert duration(59.6) == "1 min"


def test_a_packed_population_counts_each_of_its_agents(tmp_path, monkeypatch):
    """A sweep of a 2-agent and a 6-agent population said 50% when the small one had finished,
    of a grid counted in population-steps (2,000, not 8,000)."""
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    runs = [tmp_path / name for name in ("prune-td3", "td3")]
    progress = Progress(runs, steps=1_000, workers=1, agents=[2, 6])
    progress.start(runs[0])
    metrics(runs[0], 1000)
    now[0] = 10.0  # 2 agents x 1,000 steps in 10 s: 200 agent-steps/s
    progress.end(runs[0], finished=True)
    # the 6-agent population: 6,000 agent-steps at 200 per second
    assert progress.line() == "progress: 25% of 8,000 steps, 10 s in, about 30 s left"
