"""Fault injection: a run killed (SIGKILL) at random points, checkpoint writes included, always
resumes with its own command and ends exactly as a run that was never stopped."""

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dstrl.cli import main
from tests.helpers import assert_same
from tests.test_train import _logs

FAULTY = Path(__file__).with_name("faulty_train.py")
RUN = ["--env", "Hopper-v5", "--seeds", "2", "--steps", "1200", "--start-steps", "200"]
RUN += ["--eval-every", "200", "--eval-episodes", "1", "--checkpoint-every", "100"]
RUN += ["--log-every", "100", "--update-period", "50", "--td3.hidden-sizes", "64", "64"]
RUN += ["--td3.batch-size", "32", "--lambdas", "2", "16", "--no-progress", "--no-tensorboard"]


@pytest.mark.slow
def test_twenty_kills_at_random_points_change_nothing(tmp_path):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert main(["train", *RUN, "--out", str(whole)]) == 0
    command = ["train", *RUN, "--out", str(run), "--auto-resume"]
    rng = random.Random(0)
    kills, mid_write = 0, 0
    while kills < 20:
        if kills % 2:  # inside a write: of a checkpoint (~150 kB), a log, config.json
            fault = ["bytes", str(rng.randint(1, 400_000))]
        else:  # anywhere: importing, stepping, learning, evaluating, writing
            fault = ["seconds", f"{rng.uniform(1.0, 6.0):.2f}"]
        result = subprocess.run(
            [sys.executable, str(FAULTY), *fault, *command], capture_output=True, text=True
        )
        assert result.returncode in (-9, 0), result.stderr
        kills += result.returncode == -9
        mid_write += result.returncode == -9 and any(run.glob("*.tmp"))
        if result.returncode == 0:  # it finished before the fault: start the run over
            assert _logs(run) == _logs(whole)
            shutil.rmtree(run)
    assert mid_write >= 5  # half the kills aim inside writes; most land there
    assert main(command) == 0
    assert _logs(run) == _logs(whole)
    final = [torch.load(r / "checkpoint.pt")["agent"] for r in (run, whole)]
    assert_same(*final)
    assert not list(run.glob("*.tmp"))
