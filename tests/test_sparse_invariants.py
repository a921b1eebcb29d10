"""The sparse core's contracts, checked over many optimiser steps and topology updates, with
layers computed masked-dense and by their connections alone."""

import sys

import numpy as np
import pytest
import torch

from dstrl.dormant import recycle
from dstrl.nets import StackedMLP
from dstrl.optim import Adam
from dstrl.sparse import engine
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.schedule import TopologySchedule

KERNELS = "masked"


@pytest.fixture(params=["masked", "masked, multiplied", "sparse"])
def kernels(request, monkeypatch):
    """Run a test on every path of the sparse layers (``_network`` builds with this choice):
    masked dense with the compiled gradient masks (the CPU's), masked dense with gradients
    multiplied by the masks (other devices'), and by connections."""
    choice, _, multiplied = request.param.partition(", ")
    if multiplied:
        monkeypatch.setattr(engine, "compiled", lambda weight, mask: False)
    monkeypatch.setattr(sys.modules[__name__], "KERNELS", choice)
    return choice


def _network(members=3, topology="set", drop_score="signed", grow="random", nm=None):
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(members, [8, 32, 32, 2], g)
    config = SparsityConfig(
        kernels=KERNELS,
        topology=topology,
        lambdas=None if nm else (2.0, 4.0),
        nm=nm,
        drop_score=drop_score,
        grow=grow,
        schedule=TopologySchedule(update_period=5, drop_fraction=0.2),
    )
    layers = config.build(net, g)
    net.use_kernels(layers.kernels())
    assert (net._plan() is not None) == (KERNELS == "sparse")
    optimizer = Adam(net.parameters(), lr=1e-2, weight_decay=1e-2)
    layers.attach_optimizer(optimizer)
    return net, layers, optimizer, g


def _train_step(net, layers, optimizer, g, step):
    x = torch.randn(net.members, 16, 8, generator=g)
    loss = net(x).square().mean()
    optimizer.zero_grad()
    loss.backward()
    layers.mask_gradients(step)
    optimizer.step()
    return layers.maybe_update(step)


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize(
    ("drop_score", "grow", "nm"),
    [
        ("signed", "random", None),
        ("magnitude", "random", None),
        ("signed", "gradient", None),
        ("signed", "random", (2, 4)),
        ("magnitude", "gradient", (1, 8)),
    ],
)
def test_counts_constant_and_inactive_weights_exactly_zero(drop_score, grow, nm):
    net, layers, optimizer, g = _network(drop_score=drop_score, grow=grow, nm=nm)
    counts = [c.clone() for c in layers.active_counts()]
    initial = [m.clone() for m in layers.masks]
    updates = 0
    for step in range(1, 101):
        updates += _train_step(net, layers, optimizer, g, step) is not None
        for weight, mask in zip(layers.weights, layers.masks, strict=True):
            assert (weight[~mask] == 0).all()  # weight decay and Adam cannot revive them
        for before, now in zip(counts, layers.active_counts(), strict=True):
            assert torch.equal(before, now)
        if nm is not None:  # every group of M inputs keeps exactly N connections
            for mask in layers.masks:
                groups = mask.reshape(-1, nm[1]).sum(1)
                assert (groups == nm[0]).all()
    assert updates == 20
    assert any(not torch.equal(a, b) for a, b in zip(initial, layers.masks, strict=True))


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize("grow", ["random", "gradient"])
def test_grown_weights_start_at_zero_with_zero_moments_and_dropped_moments_cleared(grow):
    net, layers, optimizer, g = _network(grow=grow)
    for step in range(1, 5):  # four steps, no topology update yet: moments are non-zero
        _train_step(net, layers, optimizer, g, step)
    before = [m.clone() for m in layers.masks]
    _train_step(net, layers, optimizer, g, 5)  # step 5 updates the topology after its step
    assert layers.version == 1
    for weight, old, new in zip(layers.weights, before, layers.masks, strict=True):
        grown, dropped = new & ~old, old & ~new
        assert grown.any() and dropped.any()
        state = optimizer.state[weight]
        assert (weight[grown] == 0).all()
        for name in ("exp_avg", "exp_avg_sq"):
            assert (state[name][grown] == 0).all()
            assert (state[name][dropped] == 0).all()
            assert (state[name][new & old] != 0).any()  # survivors keep their moments
    # and the next step moves grown weights (they get gradients) but not dropped ones
    _train_step(net, layers, optimizer, g, 6)
    for weight, old, new in zip(layers.weights, before, layers.masks, strict=True):
        assert (weight[new & ~old] != 0).any()
        assert (weight[old & ~new] == 0).all()


@pytest.mark.usefixtures("kernels")
def test_connections_rigl_drops_and_regrows_keep_their_weights_and_moments():
    """RigL's growth ranks the just-dropped connections with the inactive ones; one regrown is
    one never dropped (it was zeroed, and counted as changed twice over)."""
    net, layers, optimizer, g = _network(drop_score="magnitude", grow="gradient")
    for step in range(1, 5):
        _train_step(net, layers, optimizer, g, step)
    loss = net(torch.randn(net.members, 16, 8, generator=g)).square().mean()
    optimizer.zero_grad()
    loss.backward()
    layers.mask_gradients(5)
    optimizer.step()
    rows = [w.detach().reshape(-1, w.shape[-2] * w.shape[-1]) for w in layers.weights]
    flat = [m.reshape(r.shape) for m, r in zip(layers.masks, rows, strict=True)]
    dropping = layers.rule.drop(rows, flat, 0.2)  # the drop of step 5's update, asked beforehand
    weights = [w.detach().clone() for w in layers.weights]
    moments = [optimizer.state[w]["exp_avg"].clone() for w in layers.weights]
    before = [m.clone() for m in layers.masks]
    replaced = layers.maybe_update(5)
    regrown = [d.view(m.shape) & m for d, m in zip(dropping, layers.masks, strict=True)]
    assert any(r.any() for r in regrown)
    for i, weight in enumerate(layers.weights):
        kept = before[i] & layers.masks[i]
        assert torch.equal(weight[kept], weights[i][kept])
        assert torch.equal(optimizer.state[weight]["exp_avg"][kept], moments[i][kept])
        changed = (layers.masks[i] & ~before[i]).reshape(len(replaced[i]), -1).sum(1)
        assert replaced[i] == changed.tolist()
        assert sum(replaced[i]) < int(dropping[i].sum())  # fewer than the drop took


@pytest.mark.usefixtures("kernels")
def test_static_topology_never_changes():
    net, layers, optimizer, g = _network(topology="static")
    masks = [m.clone() for m in layers.masks]
    for step in range(1, 31):
        assert _train_step(net, layers, optimizer, g, step) is None
    assert all(torch.equal(a, b) for a, b in zip(masks, layers.masks, strict=True))


def test_output_layer_dense_by_default_and_sparse_on_request():
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(1, [6, 32, 32, 2], g)
    assert len(SparsityConfig(lambdas=(2.0, 4.0)).build(net, g).masks) == 2
    layers = SparsityConfig(lambdas=(2.0, 4.0, 0.5), sparse_output=True).build(net, g)
    assert len(layers.masks) == 3
    assert layers.masks[2].float().mean().item() == pytest.approx(0.5 * 34 / 64, abs=0.01)


def test_layers_the_er_cap_makes_dense_are_left_out():
    # input layer 6x32 with λ=20 would have density > 1: it stays dense, and SET never touches it
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(1, [6, 32, 32, 2], g)
    layers = SparsityConfig(lambdas=(20.0, 4.0), cap_lambdas=True).build(net, g)
    assert layers.indices == [1]
    before = net.weights[0].detach().clone()
    layers.update_topology(0.2)
    assert torch.equal(before, net.weights[0])


@pytest.mark.parametrize(
    ("distribution", "density"), [("er", 0.01), ("uniform", 0.01), ("er", 0.1)]
)
def test_global_density_up_to_99_percent_sparsity(distribution, density):
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(1, [17, 256, 256, 6], g)
    layers = SparsityConfig(lambdas=None, density=density, distribution=distribution).build(net, g)
    active = sum(int(m.sum()) for m in layers.masks)
    assert active == pytest.approx(density * (17 * 256 + 256 * 256), abs=2)
    densities = layers.densities()
    if distribution == "uniform":
        assert densities == pytest.approx([density, density], abs=1e-3)
    else:
        assert densities[0] > densities[1]  # ER: the small input layer is denser


@pytest.mark.usefixtures("kernels")
@pytest.mark.parametrize(
    ("topology", "grow"), [("set", "random"), ("set", "gradient"), ("prune", "random")]
)
def test_a_frozen_member_keeps_its_masks_and_no_member_depends_on_another(topology, grow):
    """Member 1 is frozen and its weights are garbage (signs, zeros, NaN); members 0 and 2 end
    with exactly the masks they get when member 1 is a healthy, unfrozen network."""
    runs = []
    for frozen in (False, True):
        net, layers, optimizer, g = _network(topology=topology, grow=grow)
        if topology == "prune":
            layers.rule = type(layers.rule)(layers.rule.final_densities, 5, 60)
        garbage = torch.Generator().manual_seed(1)  # its own stream: g's draws stay the same
        if frozen:
            layers.freeze(torch.tensor([False, True, False]))
            before = [m[1].clone() for m in layers.masks]
        for step in range(1, 71):
            x = torch.randn(net.members, 16, 8, generator=g)
            optimizer.zero_grad()
            net(x).square().mean().backward()
            layers.mask_gradients(step)
            optimizer.step()
            with torch.no_grad():
                for weight in layers.weights:
                    # exact ties among the weakest weights of members 0 and 2: which of them go
                    # depends on the top-k's k, which member 1 must not change
                    weight[[0, 2], :, :4] = torch.where(weight[[0, 2], :, :4] != 0, 1e-6, 0.0)
                    if frozen:  # member 1 goes bad, with more positive weights than the others
                        weight[1] = torch.randint(0, 2, weight[1].shape, generator=garbage)
                        weight[1, 0, 0] = float("nan")
            layers.maybe_update(step)
        runs.append([m.clone() for m in layers.masks])
        if frozen:
            assert all(torch.equal(b, m[1]) for b, m in zip(before, layers.masks, strict=True))
    for clean, with_frozen in zip(*runs, strict=True):
        assert torch.equal(clean[[0, 2]], with_frozen[[0, 2]])


@pytest.mark.usefixtures("kernels")
def test_recycling_keeps_counts_masks_and_clears_moments():
    net, layers, optimizer, g = _network()
    for step in range(1, 8):
        _train_step(net, layers, optimizer, g, step)
    counts = [m.sum(-1).clone() for m in layers.masks]  # per member and row
    masks = [m.clone() for m in layers.masks]
    weights = [w.detach().clone() for w in net.weights]
    units = [torch.zeros(3, 32, dtype=torch.bool) for _ in range(2)]
    units[0][0, [1, 5]] = True
    units[1][2, 7] = True
    assert recycle(net, units, optimizer, layers, g) == 3
    for k, chosen in enumerate(units):
        incoming, outgoing = net.weights[k], net.weights[k + 1]
        mask = layers.masks[k]
        assert torch.equal(mask.sum(-1), counts[k])  # every row keeps its connection count
        assert (incoming[~mask] == 0).all()
        assert not torch.equal(mask[chosen], masks[k][chosen])  # the row was redrawn
        assert torch.equal(mask[~chosen], masks[k][~chosen])
        bound = 1 / np.sqrt(incoming.shape[-1])
        fresh = incoming[chosen][mask[chosen]]
        assert (fresh != 0).all() and (fresh.abs() <= bound).all()
        expected = weights[k]
        if k > 0:  # the previous layer's recycled units lose their outgoing weights here
            expected = expected.masked_fill(units[k - 1].unsqueeze(-2), 0.0)
        assert torch.equal(incoming[~chosen], expected[~chosen])
        assert (outgoing.transpose(-1, -2)[chosen] == 0).all()
        for param, positions in (
            (incoming, chosen.unsqueeze(-1).expand_as(incoming)),
            (net.biases[k], chosen),
            (outgoing, chosen.unsqueeze(-2).expand_as(outgoing)),
        ):
            for moment in optimizer.state[param].values():
                assert (moment[positions] == 0).all()
                assert (moment[~positions] != 0).any()
    for step in range(8, 30):  # training and topology updates go on with the invariants
        _train_step(net, layers, optimizer, g, step)
        for weight, mask, count in zip(layers.weights, layers.masks, counts, strict=True):
            assert (weight[~mask] == 0).all()
            assert torch.equal(mask.sum((-2, -1)), count.sum(-1))


@pytest.mark.usefixtures("kernels")
def test_recycling_leaves_frozen_members_masks_alone():
    net, layers, optimizer, g = _network()
    layers.freeze(torch.tensor([False, True, False]))
    before = [m[1].clone() for m in layers.masks]
    recycle(net, [torch.ones(3, 32, dtype=torch.bool)] * 2, optimizer, layers, g)
    assert all(torch.equal(b, m[1]) for b, m in zip(before, layers.masks, strict=True))


def test_cpu_gradient_masks_zero_even_a_nan_of_an_inactive_weight():
    """The compiled select zeroes an inactive weight's NaN gradient, which a multiply by 0 keeps."""
    net, layers, optimizer, g = _network()
    net(torch.randn(net.members, 16, 8, generator=g)).square().mean().backward()
    weight, mask = layers.weights[0], layers.masks[0]
    weight.grad[~mask] = float("nan")
    weight.grad[mask] = float("inf")
    layers.mask_gradients()
    assert (weight.grad[~mask] == 0).all()
    assert (weight.grad[mask] == float("inf")).all()  # active gradients are left as they are
