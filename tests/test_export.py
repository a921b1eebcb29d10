"""`dstrl export` and `dstrl.load_policy`: a trained policy without the training stack."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import dstrl
from dstrl.agents.settings import TD3Config
from dstrl.checkpoint import load_checkpoint
from dstrl.cli import main
from dstrl.config import TrainConfig
from dstrl.errors import PolicyError
from dstrl.policy import export_policy
from dstrl.train import build_agent, train
from tests.helpers import tiny_config


def _agent(run_dir, **changes):
    agent = build_agent(replace(TrainConfig.load(run_dir), **changes))
    agent.load_state_dict(load_checkpoint(run_dir)["agent"])
    return agent


@pytest.mark.parametrize("algo", ["ds-td3", "ds-sac"])
def test_an_exported_policy_acts_exactly_as_the_trained_agents(tmp_path, capsys, algo):
    run, file = tmp_path / "run", tmp_path / "policy.safetensors"
    train(tiny_config(run, algo=algo, env="Hopper-v5", seeds=2, steps=300))
    assert main(["export", str(run), "--out", str(file)]) == 0
    assert "2 member(s)" in capsys.readouterr().out
    policy = dstrl.load_policy(file)
    assert (policy.env, policy.seeds, policy.members) == ("Hopper-v5", [0, 1], 2)
    obs = np.random.default_rng(0).normal(size=(2, 11))
    # the run computed its sparsest layers by their connections: the same actions up to float32
    # rounding; computed masked-dense, as the policy computes, exactly the same
    by_connections = _agent(run, sparse_kernels="sparse")
    np.testing.assert_allclose(
        policy(obs), by_connections.act(obs, explore=False), rtol=1e-5, atol=1e-6
    )
    agent = _agent(run, sparse_kernels="masked")
    assert np.array_equal(policy(obs), agent.act(obs, explore=False))
    # one member alone, on one observation or on a batch of them
    second = dstrl.load_policy(file, member=1)
    assert np.array_equal(second(obs[1]), agent.act(obs, explore=False)[1])
    # a member from NumPy (np.arange, say) is a member; True is not one
    assert np.array_equal(dstrl.load_policy(file, member=np.int64(1))(obs[1]), second(obs[1]))
    with pytest.raises(PolicyError, match="member must be an integer, not True"):
        policy.member(True)
    with pytest.raises(PolicyError, match="observations must have .* entries, got a number"):
        second(np.float32(1.0))  # an IndexError
    assert second(np.stack([obs[1]] * 5)).shape == (5, 3)
    # the masks travel with the weights, and the weights are zero outside them
    for i, mask in zip(agent.actor_sparse.indices, agent.actor_sparse.masks, strict=True):
        assert torch.equal(policy.masks[i], mask) and (policy.weights[i][~mask] == 0).all()
    with safe_open(file, "pt") as f:  # a plain safetensors file: arrays and a JSON header
        assert json.loads(f.metadata()["metadata"])["config"]["algo"] == algo


def test_eval_of_an_exported_file_equals_eval_of_its_run(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(run, seeds=2, steps=300))
    assert main(["eval", str(run), "--episodes", "2"]) == 0
    from_run = capsys.readouterr().out
    assert main(["export", str(run), "--out", str(tmp_path / "all.safetensors")]) == 0
    one = tmp_path / "one.safetensors"
    assert main(["export", str(run), "--out", str(one), "--member", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "all.safetensors"), "--episodes", "2"]) == 0
    assert capsys.readouterr().out == from_run
    assert main(["eval", str(one), "--episodes", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == from_run.splitlines()[1]  # seed 1


def test_bad_policy_files_and_members_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    assert main(["eval", str(tmp_path / "junk.safetensors")]) == 2
    assert "is not a safetensors file" in capsys.readouterr().err
    header = {"format": "dstrl-policy/1", "metadata": json.dumps({"layers": 2})}
    save_file({"weight.0": torch.zeros(1, 2, 3)}, tmp_path / "part.safetensors", header)
    assert main(["eval", str(tmp_path / "part.safetensors")]) == 2
    assert "is an incomplete dstrl policy (missing 'weight.1')" in capsys.readouterr().err
    run = tmp_path / "run"
    train(tiny_config(run, steps=200))
    assert main(["export", str(run), "--out", str(tmp_path / "p"), "--member", "3"]) == 2
    assert "member 3 does not exist; this policy has 1 (give 0)" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(run / "config.json" / "p")]) == 1
    assert capsys.readouterr().err.endswith("config.json/p: Not a directory\n")
    main(["export", str(run), "--out", str(tmp_path / "p")])
    with pytest.raises(PolicyError, match="observations must have 3 entries"):
        dstrl.load_policy(tmp_path / "p")(np.zeros(4))


def test_a_mixed_population_exports_under_its_algorithms_names(tmp_path, capsys):
    run, file = tmp_path / "run", tmp_path / "mixed.safetensors"
    train(tiny_config(run, algo=("td3", "ds-td3"), seeds=1, steps=200))
    assert main(["export", str(run), "--out", str(file)]) == 0
    assert f"wrote {file}: td3 ds-td3 on Pendulum-v1, 2 member(s)" in capsys.readouterr().out
    assert main(["eval", str(file), "--episodes", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("td3 seed 0: return") and lines[0].endswith(
        "over 1 episode (step 200)"
    )
    assert lines[1].startswith("ds-td3 seed 0: return") and len(lines) == 2  # no mean of one
    assert main(["export", str(run), "--out", str(file), "--member", "1"]) == 0
    assert main(["eval", str(file), "--episodes", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ds-td3 seed 0: return")


def _policy_with(source, target, **changes):
    """A copy of the policy file ``source`` with its header's metadata changed, as made by
    hand: with no checksum."""
    with safe_open(source, "pt") as f:
        header, tensors = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
    metadata = dict(json.loads(header["metadata"]), **changes)
    header = {k: v for k, v in header.items() if k != "sha256"}
    save_file(tensors, target, dict(header, metadata=json.dumps(metadata)))
    return target


def test_a_checkpoint_that_does_not_fit_config_json_is_one_line_for_eval_and_export(
    tmp_path, capsys
):
    run = tmp_path / "run"
    train(tiny_config(run, steps=200))
    config = json.loads((run / "config.json").read_text())
    config["td3"]["hidden_sizes"] = [64, 64]  # edited by hand
    (run / "config.json").write_text(json.dumps(config))
    for command in (["eval", str(run)], ["export", str(run), "--out", str(tmp_path / "p")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dstrl: error: {run}/checkpoint.pt does not fit the run's config")
        assert err.count("\n") == 1


def test_export_replaces_no_file_but_an_older_policy(tmp_path, capsys):
    """--out at the run's own checkpoint wrote the policy over it, and the run was lost."""
    run = tmp_path / "run"
    train(tiny_config(run, steps=200))
    checkpoint = (run / "checkpoint.pt").read_bytes()
    assert main(["export", str(run), "--out", str(run / "checkpoint.pt")]) == 2
    assert "checkpoint.pt exists and is not a dstrl policy, so it is not replaced" in (
        capsys.readouterr().err
    )
    assert (run / "checkpoint.pt").read_bytes() == checkpoint
    assert main(["export", str(run), "--out", "."]) == 2
    assert "--out . must name a file" in capsys.readouterr().err
    fresh = tmp_path / "new" / "dir" / "p.safetensors"  # its directory is made
    assert main(["export", str(run), "--out", str(fresh)]) == 0
    assert main(["export", str(run), "--out", str(fresh)]) == 0  # an older policy: replaced
    assert export_policy(str(run), str(fresh)).members == 1  # from Python, paths as str too


def test_a_policy_file_cannot_make_eval_import_a_module(tmp_path, capsys):
    """Gymnasium imports the module of an id "module:Env-v0": a policy file naming one made
    `dstrl eval FILE` run that module's code."""
    run, policy = tmp_path / "run", tmp_path / "p.safetensors"
    train(tiny_config(run, steps=200))
    assert main(["export", str(run), "--out", str(policy)]) == 0
    planted = _policy_with(policy, tmp_path / "planted.safetensors", env="this:Pendulum-v1")
    capsys.readouterr()
    assert main(["eval", str(planted)]) == 2
    out, err = capsys.readouterr()
    assert "Zen of Python" not in out and "unknown environment 'this:Pendulum-v1'" in err


@pytest.mark.parametrize("where", ["weight", "metadata"])
def test_a_policy_file_damaged_after_export_is_refused(tmp_path, capsys, where):
    """A flipped bit in a weight, or a changed byte in the metadata, loaded without a word: as
    another policy, or one of another task."""
    run, policy = tmp_path / "run", tmp_path / "p.safetensors"
    train(tiny_config(run, steps=200))
    assert main(["export", str(run), "--out", str(policy)]) == 0
    data = bytearray(policy.read_bytes())
    length = int.from_bytes(data[:8], "little")
    if where == "weight":
        start, end = json.loads(data[8 : 8 + length])["weight.1"]["data_offsets"]
        data[8 + length + (start + end) // 2] ^= 0x04  # a low bit of a float32
    else:
        data[: 8 + length] = data[: 8 + length].replace(b"Pendulum-v1", b"Pendulum-v0")
    policy.write_bytes(data)
    assert main(["eval", str(policy)]) == 2
    err = capsys.readouterr().err
    assert err.endswith(": its contents no longer match their checksum; export it again\n")
    assert main(["export", str(run), "--out", str(policy)]) == 0  # and an export mends it
    assert main(["eval", str(policy), "--episodes", "1"]) == 0


@pytest.mark.parametrize(
    ("changes", "damage"),
    [
        ({"seeds": "ab"}, "its seeds cannot be read"),
        ({"step": None}, "its step cannot be read"),
        ({"methods": []}, "its methods cannot be read"),
        ({"diverged": [[0]]}, "its diverged cannot be read"),
        ({"head": "squashed-gaussian-mean"}, "its last layer does not fit its action bounds"),
    ],
)
def test_an_edited_policy_header_is_one_line(tmp_path, capsys, changes, damage):
    run, policy = tmp_path / "run", tmp_path / "p.safetensors"
    train(tiny_config(run, steps=200))
    assert main(["export", str(run), "--out", str(policy)]) == 0
    edited = _policy_with(policy, tmp_path / "edited.safetensors", **changes)
    capsys.readouterr()
    assert main(["eval", str(edited)]) == 2
    err = capsys.readouterr().err
    assert err == f"dstrl: error: {edited} is a damaged dstrl policy: {damage}; export it again\n"


def test_a_policy_file_cut_short_is_refused_and_replaced_by_an_export(tmp_path, capsys):
    """A cut file was "not a dstrl policy", which --out refused to replace."""
    run, policy = tmp_path / "run", tmp_path / "p.safetensors"
    train(tiny_config(run, steps=200))
    assert main(["export", str(run), "--out", str(policy)]) == 0
    data = policy.read_bytes()
    policy.write_bytes(data[: 8 + int.from_bytes(data[:8], "little") + 100])
    capsys.readouterr()
    assert main(["eval", str(policy)]) == 2
    err = capsys.readouterr().err
    assert f"{policy} is a damaged dstrl policy: it is cut short (" in err
    assert err.endswith("; export it again\n")
    assert main(["export", str(run), "--out", str(policy)]) == 0
    assert main(["eval", str(policy), "--episodes", "1"]) == 0


def test_a_script_finds_what_it_needs_in_dstrl_itself(tmp_path):
    """Only load_policy was there: a script imported from four modules to train and report."""
    from dstrl.agents.settings import SACConfig, TD3Config
    from dstrl.analysis.report import write_report
    from dstrl.config import ConfigError, TrainConfig
    from dstrl.policy import load_policy
    from dstrl.train import train
    from tests.helpers import imported_by

    assert imported_by("dstrl") == []  # names imported on first use: nothing heavy
    assert (dstrl.TrainConfig, dstrl.ConfigError, dstrl.TD3Config, dstrl.SACConfig) == (
        TrainConfig,
        ConfigError,
        TD3Config,
        SACConfig,
    )
    assert (dstrl.write_report, dstrl.load_policy) == (write_report, load_policy)
    assert dstrl.PolicyError is PolicyError  # what load_policy and a policy's call raise
    assert dstrl.train.train is train  # the module: its name is the package's
    assert {"TrainConfig", "write_report", "load_policy"} <= set(dir(dstrl))
    with pytest.raises(AttributeError, match="module 'dstrl' has no attribute 'trian'"):
        dstrl.trian  # noqa: B018


def test_eval_of_a_path_that_does_not_exist_says_so(tmp_path, capsys):
    """It said "not a dstrl run directory (no config.json)" of a policy file never written."""
    missing = tmp_path / "p3.safetensors"
    assert main(["eval", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"dstrl: error: {missing} does not exist: give a run directory, or a policy file of "
        "dstrl export\n"
    )


def test_settings_given_as_lists_are_taken_as_tuples():
    """``hidden_sizes=[32, 32]``, the natural thing to type, was refused as not a tuple."""
    config = TrainConfig(lambdas=[7, 64], td3=TD3Config(hidden_sizes=[32, 32]))
    config.validate()
    assert (config.lambdas, config.td3.hidden_sizes) == ((7, 64), (32, 32))
