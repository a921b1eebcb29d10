"""Sparse layers computed by their connections give the masked-dense numbers: the three kernels,
whole networks (autograd and closed-form backward), and agents trained over topology updates."""

from copy import deepcopy

import numpy as np
import pytest
import torch

from dstrl.agents.sac import SAC, SACConfig
from dstrl.agents.td3 import TD3, TD3Config
from dstrl.config import ConfigError, TrainConfig
from dstrl.nets import StackedMLP
from dstrl.sparse import kernels
from dstrl.sparse.compute import SPARSE_BELOW, LayerKernel
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.kernels import Connections
from dstrl.sparse.masks import random_mask
from dstrl.sparse.schedule import TopologySchedule

TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def _as_mask(c: Connections, shape) -> torch.Tensor:
    """The boolean mask that a CSR describes (the inverse of ``Connections.of``)."""
    members, n_out, n_in = shape
    mask = torch.zeros(members * n_out, n_in, dtype=torch.bool)
    rows = np.repeat(np.arange(members * n_out), np.diff(c.row_pointers))
    mask[torch.as_tensor(rows), torch.as_tensor(c.columns, dtype=torch.int64)] = True
    return mask.view(shape)


def _mask(members, n_out, n_in, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(members, n_out, n_in, density, g)
    mask[0, 1] = False  # a unit with no connection
    mask[-1, 2] = True  # and one with every connection
    return mask


@pytest.mark.parametrize("batch", [1, 7, 100])
@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("members", [None, [0, 2]])
def test_the_three_products_equal_masked_dense_ones(batch, density, members):
    g = torch.Generator().manual_seed(1)
    mask = _mask(3, 37, 29, density)
    weight = torch.randn(3, 37, 29, generator=g) * mask
    bias = torch.randn(3, 37, generator=g)
    chosen = np.arange(3) if members is None else np.array(members)
    e = len(chosen)
    x = torch.randn(e, 29, batch, generator=g).relu()  # feature-major, a ReLU output
    grad = torch.randn(e, 37, batch, generator=g)
    c = Connections.of(mask)
    assert torch.equal(_as_mask(c, mask.shape), mask)
    w, b = weight[chosen], bias[chosen]

    y = kernels.forward(weight, bias, c, chosen, x)
    torch.testing.assert_close(y, torch.baddbmm(b.unsqueeze(2), w, x), **TOLERANCE)
    rectified = kernels.forward(weight, bias, c, chosen, x, relu=True)
    assert torch.equal(rectified, y.relu())

    gx = kernels.input_gradient(weight, c, chosen, grad, None)
    torch.testing.assert_close(gx, torch.bmm(w.mT, grad), **TOLERANCE)
    gated = kernels.input_gradient(weight, c, chosen, grad, x)
    torch.testing.assert_close(gated, torch.bmm(w.mT, grad) * (x > 0), **TOLERANCE)

    out = torch.full((e, 37, 29), 7.0)
    gw, none = kernels.weight_gradient(c, chosen, x, grad, out)
    assert gw is out and none is None
    m = mask[chosen]
    torch.testing.assert_close(gw[m], torch.bmm(grad, x.mT)[m], **TOLERANCE)
    assert (gw[~m] == 7.0).all()  # written at the connections only
    again, gb = kernels.weight_gradient(c, chosen, x, grad, out.clone(), bias=True)
    assert torch.equal(again, gw)
    torch.testing.assert_close(gb, grad.sum(dim=2), **TOLERANCE)


def _pair(kernel_choice, sizes=(6, 48, 48, 3), density=0.15, tanh=True):
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(4, list(sizes), g, output_tanh=tanh)
    config = SparsityConfig(density=density, sparse_output=True, kernels=kernel_choice)
    layers = config.build(net, g)
    net.use_kernels(layers.kernels())
    return net, layers


@pytest.mark.parametrize("batch", [9, 37])  # 37: padded to 48 inside (nets.LANES)
def test_a_network_by_connections_equals_it_masked_forward_and_backward(batch):
    (sparse, layers), (masked, _) = _pair("sparse"), _pair("masked")
    assert sparse._plan() is not None and masked._plan() is None
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, batch, 6, generator=g)
    for net in (sparse, masked):  # autograd, every parameter and the input
        xi = x.clone().requires_grad_()
        net(xi).sin().sum().backward()
        net.input_grad = xi.grad
    torch.testing.assert_close(sparse.input_grad, masked.input_grad, **TOLERANCE)
    _assert_same_gradients(sparse, masked, layers)

    # frozen, on every other member: the input gradient only (an actor's loss)
    grads = []
    for net in (sparse, masked):
        xi = x[::2].clone().requires_grad_()
        net.zero_grad()
        net(xi, members=slice(0, None, 2), frozen=True).square().sum().backward()
        assert all(p.grad is None for p in net.parameters())
        grads.append(xi.grad)
    torch.testing.assert_close(*grads, **TOLERANCE)

    # every other member, parameters too: zero gradients for the others
    for net in (sparse, masked):
        net.zero_grad()
        net(x[1::2], members=slice(1, None, 2)).sin().sum().backward()
    _assert_same_gradients(sparse, masked, layers)
    assert (sparse.weights[1].grad[::2] == 0).all() and (sparse.biases[0].grad[::2] == 0).all()

    # without autograd: inference, and the closed-form backward of a regression
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), masked(x), **TOLERANCE)
    for net in (sparse, masked):
        y, saved = net.forward_saved(x)
        net.backward_from(saved, 2 * y)
    _assert_same_gradients(sparse, masked, layers)


def test_a_copy_of_a_network_by_connections_computes_with_its_own_weights():
    """A network keeps views of its weights for the kernels; a deep copy made after a pass (as
    target networks are copies) must compute with the copy's weights, not the original's."""
    net, _ = _pair("sparse")
    x = torch.randn(4, 9, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = net(x)
        copy = deepcopy(net)
        for w in copy.weights:
            w.mul_(2.0)
        assert not torch.allclose(copy(x), before)  # the doubled weights are used
        torch.testing.assert_close(net(x), before, rtol=0, atol=0)  # the original is untouched


def _assert_same_gradients(sparse, masked, layers):
    """Equal gradients, except that by connections a sparse layer's gradient is zero outside
    them (masked-dense gradients are masked later, by the core's ``mask_gradients``)."""
    masks = dict(zip(layers.indices, layers.masks, strict=True))
    for i, (a, b) in enumerate(zip(sparse.weights, masked.weights, strict=True)):
        mask = masks.get(i, torch.ones_like(a, dtype=torch.bool))
        torch.testing.assert_close(a.grad, b.grad * mask, **TOLERANCE)
    for a, b in zip(sparse.biases, masked.biases, strict=True):
        torch.testing.assert_close(a.grad, b.grad, **TOLERANCE)


def _agent(family, kernel_choice, topology="set", grow="random", nm=None, target="magnitude"):
    g = torch.Generator().manual_seed(3)
    dense_nm = nm is not None
    sparsity = SparsityConfig(
        topology=topology,
        lambdas=None,
        density=None if dense_nm else 0.2,
        nm=nm,
        sparse_output=not dense_nm,
        grow=grow,
        target=target,
        schedule=TopologySchedule(update_period=20, drop_fraction=0.3),
        prune_start=10,
        prune_end=50,
        kernels=kernel_choice,
    )
    low, high = -np.ones(2), np.ones(2)
    if family == "td3":
        config = TD3Config(hidden_sizes=(40, 40), batch_size=20)
        return TD3(5, low, high, 2, config, sparsity, g)
    config = SACConfig(hidden_sizes=(40, 40), batch_size=20, target_update_interval=1)
    return SAC(5, low, high, 2, config, sparsity, g)


@pytest.mark.parametrize(
    ("family", "rule"),
    [
        ("td3", dict()),
        ("td3", dict(grow="gradient")),
        ("td3", dict(topology="static")),
        ("td3", dict(nm=(1, 4))),
        ("td3", dict(topology="prune")),
        ("td3", dict(target="online-mask")),
        ("sac", dict()),
        ("sac", dict(grow="gradient")),
    ],
)
def test_training_by_connections_follows_masked_training(family, rule):
    """100 updates with five topology updates (or pruning steps): the same masks throughout, and
    parameters, targets and losses within float32 rounding of the masked-dense run."""
    agents = [_agent(family, choice, **rule) for choice in ("sparse", "masked")]
    assert agents[0].critic._plan() is not None and agents[1].critic._plan() is None
    g = torch.Generator().manual_seed(4)
    changes = 0
    for _ in range(100):
        batch = (  # 20 transitions: padded to 32 inside
            torch.randn(2, 20, 5, generator=g),
            torch.rand(2, 20, 2, generator=g) * 2 - 1,
            torch.randn(2, 20, generator=g),
            torch.randn(2, 20, 5, generator=g),
            (torch.rand(2, 20, generator=g) < 0.1).float(),
        )
        for agent in agents:
            agent.update(*batch)
        changes += agents[0].last_topology_change is not None
        for a, b in zip(agents[0].sparse_targets, agents[1].sparse_targets, strict=True):
            assert all(
                torch.equal(x, y) for x, y in zip(a.layers.masks, b.layers.masks, strict=True)
            )
            for target, kernel in zip(a.targets, a.kernels().values(), strict=True):
                connections = kernel.connections()  # the target lies within what it reads
                if connections is not None:
                    assert (target[~_as_mask(connections, target.shape)] == 0).all()
    assert changes == (0 if rule.get("topology") == "static" else 5)
    sparse, masked = (agent.state_dict() for agent in agents)
    for name in ("actor", "critic", "critic_target"):
        for key, value in sparse[name].items():
            torch.testing.assert_close(value, masked[name][key], rtol=1e-3, atol=1e-4)
    losses = [agent.pop_losses() for agent in agents]
    for key, value in losses[0].items():
        np.testing.assert_allclose(value, losses[1][key], rtol=1e-3)


def test_auto_chooses_by_density_and_follows_gradual_pruning():
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(2, [6, 64, 64, 3], g)
    schedule = TopologySchedule(update_period=5)
    config = SparsityConfig(
        topology="prune", density=0.1, sparse_output=True, prune_end=30, schedule=schedule
    )
    layers = config.build(net, g)
    net.use_kernels(layers.kernels())
    assert net._plan() is None  # pruning starts dense
    for step in range(1, 31):
        if schedule.is_update_step(step):
            layers.update_topology(0.0, step)
        plan = net._plan() or [None] * 3
        # by the scheduled density, which the masks follow
        assert layers.planned == pytest.approx(layers.densities(), abs=0.02)
        for density, connections in zip(layers.planned, plan, strict=True):
            assert (connections is not None) == (density <= SPARSE_BELOW)
    assert plan[1] is not None  # the hidden layer ends at 10%: by its connections
    # masked never computes by connections
    masked = SparsityConfig(density=0.05, sparse_output=True, kernels="masked").build(net, g)
    assert all(k.connections() is None for k in masked.kernels().values())


def test_sparse_kernels_refuse_weights_they_cannot_run_with_one_line():
    weight = torch.zeros(1, 4, 4, device="meta")
    support, version, density = (lambda: weight != 0), (lambda: 0), (lambda: 0.1)
    with pytest.raises(ValueError, match="float32 CPU weights.*use auto or masked"):
        LayerKernel(weight, support, version, density, "sparse")
    assert LayerKernel(weight, support, version, density, "auto").connections() is None
    with pytest.raises(ConfigError, match="CPU only"):
        TrainConfig(algo="ds-td3", device="cuda", sparse_kernels="sparse").validate()


def test_layers_whose_network_does_not_use_the_kernels_are_masked_as_before():
    """The core only trusts a gradient to be zero outside the connections when the network
    computed it by them: an unwired network (masked-dense) gets its gradients masked."""
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(2, [6, 48, 48, 3], g)
    layers = SparsityConfig(density=0.1, sparse_output=True, grow="gradient").build(net, g)
    assert any(k.connections() is not None for k in layers.kernels().values())
    net(torch.randn(2, 8, 6, generator=g)).sum().backward()  # masked-dense: dense gradients
    layers.mask_gradients(step=layers.schedule.update_period)  # RigL keeps the dense gradient
    for weight, mask in zip(layers.weights, layers.masks, strict=True):
        assert (weight.grad[~mask] == 0).all() and (weight.grad[mask] != 0).any()
    layers.update_topology(0.3, layers.schedule.update_period)
