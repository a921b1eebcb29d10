"""Checkpoints are plain data: loaded without running code, old ones converted, others refused."""

import gc
import json
import re
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import dstrl.train
from dstrl.checkpoint import check_plain, load_checkpoint
from dstrl.cli import main
from dstrl.data.replay import ReplayBuffer
from dstrl.errors import CheckpointError
from dstrl.train import Trainer, load_trained, train
from tests.helpers import RLX2_TINY, tiny_config


class Planted:
    """What a tampered checkpoint could carry: unpickling it would create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("env", ["Pendulum-v1", "Hopper-v5"])
def test_a_checkpoint_is_plain_data_for_classic_and_mujoco_environments(tmp_path, env):
    train(tiny_config(tmp_path / "run", env=env, steps=200))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    check_plain(state)
    env_state = state["envs"][0]
    assert isinstance(env_state["rng"]["state"]["state"], int)
    physics = env_state["mujoco"] if env == "Hopper-v5" else env_state["attributes"]["state"]
    assert torch.is_tensor(physics) and physics.dtype == torch.float64


def test_a_checkpoint_carrying_a_python_object_is_refused_and_never_run(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(run, steps=200))
    state = torch.load(run / "checkpoint.pt")
    marker = tmp_path / "it-ran"
    state["envs"][0]["rng"] = Planted(marker)
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"holds Python objects \(io.open\).*will not load"):
        load_checkpoint(run)
    for command in (
        ["eval", str(run), "--episodes", "1"],
        ["train", "--out", str(run), "--resume"],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "will not load it" in err
    assert not marker.exists()


def _as_old_format(path):
    """Rewrite a checkpoint the way dstrl wrote them before: NumPy arrays, pickled, and one loss
    sum over all members."""
    state = torch.load(path)
    state["obs"] = state["obs"].numpy()
    for env in state["envs"]:
        if "mujoco" in env:
            env["mujoco"] = env["mujoco"].numpy()
        else:
            attributes = env["attributes"]
            attributes["state"] = attributes["state"].numpy()
            attributes["last_u"] = np.float32(attributes["last_u"])
    agent = state["agent"]
    agent["loss_sums"] = [float(x.sum()) for x in agent["loss_sums"]]
    torch.save(state, path)


@pytest.mark.parametrize("env", ["Pendulum-v1", "Hopper-v5"])
def test_an_old_checkpoint_with_numpy_arrays_still_resumes_exactly(tmp_path, env):
    settings = dict(env=env, seeds=2, steps=400, checkpoint_every=100)
    train(tiny_config(tmp_path / "whole", **settings))
    train(tiny_config(tmp_path / "old", **settings), stop_after=250)
    _as_old_format(tmp_path / "old" / "checkpoint.pt")
    names = torch.serialization.get_unsafe_globals_in_checkpoint(
        str(tmp_path / "old" / "checkpoint.pt")
    )
    assert any("numpy" in name for name in names)  # it really is the old format
    train(tiny_config(tmp_path / "old", **settings, resume=True))
    evaluations = [(tmp_path / run / "evaluations.csv").read_text() for run in ("old", "whole")]
    assert evaluations[0] == evaluations[1]
    check_plain(torch.load(tmp_path / "old" / "checkpoint.pt"))  # and is written anew


def test_a_flipped_bit_or_an_empty_file_is_refused_not_loaded(tmp_path, capsys):
    """torch would load a tensor with a flipped bit as it is; the records' CRC-32 catch it."""
    run = tmp_path / "run"
    train(tiny_config(run, steps=200, checkpoint_every=100))
    path = run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # inside the replay buffer, the largest record
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"record archive/data/\d+ fails its checksum"):
        load_checkpoint(run)
    assert main(["train", "--out", str(run), "--resume", "--steps", "300"]) == 2
    assert "fails its checksum" in capsys.readouterr().err
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"corrupt or unreadable \(an empty file\)") as caught:
        load_checkpoint(run)
    assert str(caught.value).endswith(f"put back a copy, or delete {run} to train the run afresh")
    config = run / "config.json"
    config.unlink()  # a run whose configuration was deleted: what to do
    assert main(["eval", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"dstrl: error: {run} holds a run but no config.json (deleted?): put it back, or delete "
        f"{run} to train the run afresh\n"
    )


DELETED = object()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": None}, "--seed must be an integer, not None"),
        ({"seeds": "two"}, "--seeds must be an integer, not 'two'"),
        ({"overlap": 1}, "--overlap must be True or False, not 1"),
        # a field removed: the message was "('hidden_sizes')"
        (
            {"td3": {"hidden_sizes": DELETED}},
            r"config.json is not a valid dstrl configuration \(it has no 'hidden_sizes'\)",
        ),
        ({"td3": {"hidden_sizes": [16, 16]}}, r"checkpoint.pt does not fit .* size mismatch"),
    ],
)
def test_a_hand_edited_config_json_that_cannot_be_is_one_line(tmp_path, capsys, change, message):
    run = tmp_path / "run"
    train(tiny_config(run, steps=200, checkpoint_every=100))
    config = json.loads((run / "config.json").read_text())
    if "td3" in change:
        td3 = config["td3"] | change["td3"]
        change = {"td3": {k: v for k, v in td3.items() if v is not DELETED}}
    (run / "config.json").write_text(json.dumps(config | change))
    assert main(["train", "--out", str(run), "--resume", "--steps", "300"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and re.search(message, err)


def _maps_checkpoint(pid: int | str = "self") -> bool:
    """Whether a process (this one by default) maps a checkpoint file."""
    gc.collect()
    return "checkpoint.pt" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize(
    ("algo", "settings"),
    [
        ("ds-td3", {}),
        ("ds-td3", {"sparse_kernels": "sparse", "grow": "gradient", "redo_period": 40}),
        ("ds-sac", {}),
        ("rlx2-td3", RLX2_TINY),
        (("td3", "static-td3", "ds-td3"), {}),
        ("ds-td3", {"vector_env": "async", "env_workers": 2}),  # nor do its workers
    ],
)
def test_a_resumed_run_holds_neither_its_loaded_checkpoint_nor_its_file(
    tmp_path, monkeypatch, algo, settings
):
    """The checkpoint is mapped, not read (its replay can be many GB), and dropped once the
    trainer has copied it: kept, it would hold a second replay in memory for the rest of the
    run, and the old file's disk space after the next checkpoint replaced it."""
    config = tiny_config(tmp_path / "run", algo=algo, **settings)
    assert train(config, stop_after=150) is None
    loaded = []

    def load(run_dir):
        state = load_checkpoint(run_dir)
        assert _maps_checkpoint()  # mapped, not read
        loaded.append(weakref.ref(state["buffer"]["rows"]))
        return state

    held = []

    def loop(self, *args):
        workers = [p.pid for e in (self.envs, self.eval_envs) for p in getattr(e, "_processes", [])]
        mapped = _maps_checkpoint() or any(_maps_checkpoint(pid) for pid in workers)
        held.append((mapped, loaded[0]() is not None))
        return loop_before(self, *args)

    loop_before = Trainer._loop
    monkeypatch.setattr(dstrl.train, "load_checkpoint", load)
    monkeypatch.setattr(Trainer, "_loop", loop)
    train(replace(config, resume=True))
    assert held == [(False, False)]
    trained = load_trained(config.run_dir)  # what eval and export read
    assert not _maps_checkpoint() and trained.step == 400


def test_a_full_replay_is_saved_without_a_copy_and_a_partial_one_as_its_rows():
    buffer = ReplayBuffer(2, 4, 1, 1, torch.device("cpu"))
    for value in range(3):
        x = np.full((2, 1), float(value))
        buffer.add(x, x, np.full(2, float(value)), x, np.zeros(2))
    partial = buffer.state_dict()["rows"]
    width = buffer.width
    assert partial.shape == (2, 3, width)
    assert partial.untyped_storage().nbytes() == 2 * 3 * width * 4  # not the whole allocation
    x = np.full((2, 1), 3.0)
    buffer.add(x, x, np.full(2, 3.0), x, np.zeros(2))
    state = buffer.state_dict()
    assert state["rows"].data_ptr() == buffer.rows.data_ptr()  # the buffer itself
    restored = ReplayBuffer(2, 4, 1, 1, torch.device("cpu"))
    restored.load_state_dict(state)
    assert torch.equal(restored.rows, buffer.rows)


def test_a_subclass_of_a_number_is_not_plain_data():
    """An IntEnum is an int to isinstance: saved, it was pickled as its class, and the run's own
    checkpoint was then refused as "made or changed elsewhere"."""
    from tests.custom_envs import Mode

    check_plain({"step": 3, "ok": True, "name": "x", "value": 0.5})
    with pytest.raises(TypeError, match=r"checkpoint\['mode'\] is a Mode, not plain data"):
        check_plain({"mode": Mode.LEFT})
