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

from dstrl.agents.td3 import TD3Config
from dstrl.errors import CaptureError
from dstrl.graphs import GraphedActing, GraphedUpdates, capture_for
from dstrl.train import build_agent
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


HOST_READS = {  # what fails inside a CUDA capture: a value or copy back, a data-dependent size
    "item": lambda w, counts: w.sum().item(),
    "tolist": lambda w, counts: w.tolist(),
    "cpu": lambda w, counts: w.cpu(),
    "to cpu": lambda w, counts: w.to("cpu"),
    "nonzero": lambda w, counts: w.nonzero(),
    "boolean index": lambda w, counts: w[w > 0],
    "unique": lambda w, counts: torch.unique(w),
    "repeat by tensor": lambda w, counts: w.flatten().repeat_interleave(counts),
}


@pytest.mark.parametrize("read", HOST_READS.values(), ids=HOST_READS.keys())
def test_capture_refuses_a_host_read(tmp_path, read):
    trainer = learning_trainer(tmp_path / "run", "td3")
    capture = EmulatedCapture(trainer.agent.generator)
    weights = trainer.agent.actor.weights[0]
    counts = torch.ones(weights.numel(), dtype=torch.long)
    with pytest.raises(RuntimeError, match="previous error during capture") as caught:
        capture.capture(lambda: read(weights, counts))
    assert "reads the device from the host" in str(caught.value.__context__)


def test_capture_takes_what_a_cuda_graph_can_hold(tmp_path):
    """Indexing by positions, ``where`` with both branches, a repeat of known size."""
    trainer = learning_trainer(tmp_path / "run", "td3")
    capture = EmulatedCapture(trainer.agent.generator)
    weights = trainer.agent.actor.weights[0]
    counts = torch.ones(weights.numel(), dtype=torch.long)
    rows = torch.tensor([0, 0])
    capture.capture(
        lambda: (
            weights[rows],
            torch.where(weights > 0, weights, 0.0),
            weights.flatten().repeat_interleave(counts, output_size=weights.numel()),
            weights.to(weights.device, torch.float64),
        )
    )


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
    assert "reads the device from the host during capture" in message  # the cause, not its echo
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


def _cloned(state):
    """A state dict whose tensors are copies (an optimiser loads same-device tensors as they
    are, which would share them)."""
    if torch.is_tensor(state):
        return state.clone()
    if isinstance(state, dict):
        return {key: _cloned(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_cloned(value) for value in state)
    return state


def _assert_close(got, want, where: str, rtol: float, atol: float) -> None:
    """Floats within the tolerance; masks, counts, generator states and the rest equal."""
    if torch.is_tensor(want) and want.is_floating_point():
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{where}: {m}")
    elif torch.is_tensor(want):
        assert torch.equal(got, want), where
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            _assert_close(got[key], want[key], f"{where} {key}", rtol, atol)
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_close(a, b, f"{where} [{index}]", rtol, atol)
    else:
        assert got == want, where


class Lockstep:
    """A trainer's updates and acting replayed from graphs, each also run eagerly by a twin agent
    from the same state. After every update and every action the two are compared, then the twin
    is set to the graphed agent's state: a difference is caught at the update that makes it and
    never compounds (on the CPU, starting weights perturbed by a relative 1e-6 end 300 updates
    of these tiny runs outside a relative 1e-4, some with other masks; see
    benchmarks/graph_drift.py)."""

    def __init__(self, trainer, capture, rtol: float = 0.0, atol: float = 0.0) -> None:
        self.agent, self.twin = trainer.agent, build_agent(trainer.config)
        self.twin.load_state_dict(_cloned(self.agent.state_dict()))
        self.graphed = GraphedUpdates(self.agent, capture)
        self.acting = GraphedActing(self.agent, capture)
        self.tolerance = dict(rtol=rtol, atol=atol)
        trainer.update, trainer.explore = self.update, self.explore

    def update(self, *batch) -> None:
        self._draw_alike()  # the batch was sampled with the agent's generator
        self.twin.update(*batch)
        self.graphed(*batch)
        state = self.agent.state_dict()
        _assert_close(
            state, self.twin.state_dict(), f"update {self.agent.updates}", **self.tolerance
        )
        self.twin.load_state_dict(_cloned(state))

    def explore(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._draw_alike()
        want, got = self.twin.explore(obs), self.acting(obs)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, **self.tolerance)
        generator = self.agent.generator.get_state()
        assert torch.equal(generator, self.twin.generator.get_state())  # the same noise drawn
        return got

    def _draw_alike(self) -> None:
        self.twin.generator.set_state(self.agent.generator.get_state())


@pytest.mark.parametrize("algo", ["ds-td3", ("td3", "static-td3", "ds-td3")])
def test_in_lockstep_every_replayed_update_equals_the_eager_one(tmp_path, as_off_the_cpu, algo):
    """The harness of the GPU test below, on the CPU's emulated graphs: bit for bit."""
    trainer = learning_trainer(tmp_path / "run", algo, sparse_kernels="masked")
    lockstep = Lockstep(trainer, EmulatedCapture(trainer.agent.generator))
    _train(trainer, 110)  # two topology updates
    assert lockstep.graphed.captures >= 2
    assert lockstep.graphed.replays >= 100  # eager: the warm-up, and each kind's first step
    assert lockstep.acting.replay is not None


def test_lockstep_names_the_update_where_a_replay_goes_wrong(tmp_path, as_off_the_cpu, monkeypatch):
    """One graph for both of TD3's step kinds: update 4 is captured with the delayed actor step,
    and update 5, a critic step alone, replays it."""
    trainer = learning_trainer(tmp_path / "run", "td3")
    Lockstep(trainer, EmulatedCapture(trainer.agent.generator))
    monkeypatch.setattr(trainer.agent, "graph_key", lambda discount: "one for all")
    with pytest.raises(AssertionError, match=r"update 5\b"):
        _train(trainer, 10)


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize(
    ("algo", "settings"),
    [
        ("td3", {}),
        ("td3", {"td3": TD3Config((32, 32), batch_size=32, policy_delay=4)}),
        ("ds-td3", {}),
        ("ds-td3", {"grow": "gradient"}),
        ("ds-sac", {}),
    ],
)
def test_on_a_gpu_every_replayed_update_equals_the_eager_one(tmp_path, algo, settings):
    """Real CUDA graphs against eager CUDA updates, in lockstep: 300 updates and six topology
    updates, each update's floats within a relative 1e-5 of the eager update's, masks equal."""
    trainer = learning_trainer(tmp_path / "run", algo, device="cuda", cuda_graph=True, **settings)
    assert isinstance(trainer.update, GraphedUpdates)
    assert isinstance(trainer.explore, GraphedActing)
    lockstep = Lockstep(trainer, capture_for(trainer.agent), rtol=1e-5, atol=1e-6)
    _train(trainer, 300)
    assert lockstep.graphed.captures >= 2
    # eager by design: 3 warm-up updates, each step kind's first in each of the 7 topology
    # phases (a new pruning bound is a new key) and RigL's 6 that keep a dense gradient, 23 at
    # most; the emulated graphs replayed 282-297 of the 300 over seeds
    assert lockstep.graphed.replays >= 260
