"""Gradient steps replayed from captured graphs train the same agents as eager updates.

On the CPU the graphs are emulated (``tests/graph_emulator.py``): operations, Python values and
tensors fixed at capture, as a CUDA graph fixes them. So these tests check what the CUDA path
relies on: that ``graph_key`` names everything a gradient step reads besides tensor contents,
that every tensor a step carries to the next is updated in place, and that capture needs no
host read. The same comparison on a GPU, with real CUDA graphs, is marked ``gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dstrl.graphs import CaptureError, GraphedActing, GraphedUpdates
from tests.graph_emulator import EmulatedCapture
from tests.helpers import UPDATE_KINDS, assert_same, learning_trainer


def _train(trainer, updates: int, halt_at: int | None = None) -> None:
    for _ in range(updates):
        trainer._step_envs(*trainer._begin_step())
        trainer._learn(trainer.step)
        if trainer.agent.updates == halt_at:  # as the run's health check would
            trainer.agent.halt(torch.tensor([True, False]))


def _graphed(trainer) -> EmulatedCapture:
    """Updates and acting replayed from emulated graphs, as ``--cuda-graph`` does on a GPU."""
    capture = EmulatedCapture(trainer.agent.generator)
    trainer.update = GraphedUpdates(trainer.agent, capture)
    trainer.explore = GraphedActing(trainer.agent, capture)
    return capture


@pytest.mark.parametrize(("algo", "settings"), UPDATE_KINDS)
def test_replayed_gradient_steps_train_the_agents_eager_steps_train(
    tmp_path, as_off_the_cpu, algo, settings
):
    """160 updates with three topology updates (period 50), bit for bit."""
    runs = []
    for graphed in (False, True):
        trainer = learning_trainer(
            tmp_path / str(graphed), algo, sparse_kernels="masked", **settings
        )
        capture = _graphed(trainer) if graphed else None
        _train(trainer, 160)
        runs.append((trainer.agent.state_dict(), trainer.agent.pop_losses()))
    assert_same(runs[0][0], runs[1][0])
    for name, value in runs[0][1].items():
        assert (value == runs[1][1][name]).all()
    assert capture.replays >= 2 * 100  # most updates and actions were replayed, not run eagerly
    assert trainer.update.captures <= 16  # a graph serves many updates


def test_halting_a_member_is_a_new_capture(tmp_path, as_off_the_cpu):
    runs = []
    for graphed in (False, True):
        trainer = learning_trainer(tmp_path / str(graphed), "ds-td3", sparse_kernels="masked")
        if graphed:
            _graphed(trainer)
        _train(trainer, 120, halt_at=60)
        runs.append(trainer.agent.state_dict())
    assert_same(*runs)
    halted = runs[1]["actor"]["weights.0"][0]
    assert (halted == 0).all()  # the halted member held still at zero


def test_a_key_that_leaves_out_the_step_kind_trains_other_agents(
    tmp_path, as_off_the_cpu, monkeypatch
):
    """The emulation is strict: a graph replayed for the wrong kind of step (TD3's delayed actor
    step) changes the agents."""
    runs = []
    for graphed in (False, True):
        trainer = learning_trainer(tmp_path / str(graphed), "td3")
        if graphed:
            _graphed(trainer)
            monkeypatch.setattr(trainer.agent, "graph_key", lambda discount: "one for all")
        _train(trainer, 20)
        runs.append(trainer.agent.state_dict())
    with pytest.raises(AssertionError):
        assert_same(*runs)


def test_capture_refuses_a_host_read(tmp_path):
    trainer = learning_trainer(tmp_path / "run", "td3")
    capture = EmulatedCapture(trainer.agent.generator)
    with pytest.raises(RuntimeError, match="reads the device from the host"):
        capture.capture(lambda: trainer.agent.actor.weights[0].sum().item())


def test_replayed_acting_returns_the_actions_eager_acting_returns(tmp_path, as_off_the_cpu):
    """Exploration noise included: the graph draws from the agent's generator as eager acting
    does; the returned arrays are the caller's own, not views of the graph's output."""
    eager, graphed = (
        learning_trainer(tmp_path / name, "ds-sac", sparse_kernels="masked") for name in "ab"
    )
    acting = GraphedActing(graphed.agent, EmulatedCapture(graphed.agent.generator))
    obs = eager.obs
    kept = []
    for _ in range(6):
        want, got = eager.agent.explore(obs), acting(obs)
        for a, b in zip(want, got, strict=True):
            assert np.array_equal(a, b)
        kept.append(got[0])
    assert acting.replay is not None
    assert not np.array_equal(kept[-1], kept[-2])  # fresh noise, and not one shared array


def test_a_failed_capture_stops_the_run_with_one_line_that_says_what_to_do(
    tmp_path, as_off_the_cpu, monkeypatch
):
    trainer = learning_trainer(tmp_path / "run", "td3")
    _graphed(trainer)
    step = trainer.agent.gradient_step

    def reads_back(*batch):
        step(*batch)
        trainer.agent.actor.weights[0].sum().item()  # a graph cannot hold this

    monkeypatch.setattr(trainer.agent, "gradient_step", reads_back)
    with pytest.raises(CaptureError) as caught:
        trainer.run(None)
    message = str(caught.value)
    assert "capturing a gradient step as a CUDA graph failed" in message
    assert "train with --no-cuda-graph; no checkpoint had been written yet" in message
    assert "\n" not in message
    assert trainer.agent.updates == 4  # three eager updates, then the capture


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"density": 0.1}, "CPU kernels"),  # auto: layers this sparse run by their connections
        ({"sparse_kernels": "masked"}, "pruned by a CPU kernel"),
    ],
)
def test_agents_that_run_cpu_kernels_are_refused(tmp_path, settings, reason):
    trainer = learning_trainer(tmp_path / "run", "ds-td3", **settings)
    with pytest.raises(ValueError, match=reason):
        GraphedUpdates(trainer.agent, EmulatedCapture(trainer.agent.generator))


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize(
    ("algo", "settings"),
    [("td3", {}), ("ds-td3", {}), ("ds-td3", {"grow": "gradient"}), ("ds-sac", {})],
)
def test_on_a_gpu_cuda_graphs_train_the_agents_eager_steps_train(tmp_path, algo, settings):
    """Real CUDA graphs against eager CUDA updates: 300 updates, six topology updates; the masks
    equal, everything else within float32 tolerance."""
    runs = []
    for graphed in (False, True):
        trainer = learning_trainer(
            tmp_path / str(graphed), algo, device="cuda", cuda_graph=graphed, **settings
        )
        assert isinstance(trainer.update, GraphedUpdates) == graphed
        _train(trainer, 300)
        torch.cuda.synchronize()
        runs.append(trainer.agent.state_dict())
    assert trainer.update.captures >= 2
    eager, graph = runs
    for name in ("actor_masks", "critic_masks"):
        if name in eager:
            assert_same(eager[name], graph[name])
    for name in ("actor", "critic", "critic_target"):
        for key, value in eager[name].items():
            torch.testing.assert_close(graph[name][key], value, rtol=1e-4, atol=1e-5)
