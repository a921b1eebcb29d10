"""Gradual magnitude pruning and N:M masks: hand-worked cases and invariants over many steps."""

import pytest
import torch

from dstrl.nets import StackedMLP
from dstrl.optim import Adam
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.distributions import SparsityError
from dstrl.sparse.masks import nm_mask
from dstrl.sparse.pruning import GradualPruning
from dstrl.sparse.schedule import TopologySchedule
from dstrl.sparse.target import SparseTarget
from dstrl.sparse.topology import SET, RigL, prune_and_grow


def test_cubic_schedule_by_hand():
    rule = GradualPruning((0.1,), start=10, end=20)
    assert rule.density_at(0, 0.1) == 1.0  # before the start: dense
    assert rule.density_at(10, 0.1) == 1.0
    assert rule.density_at(15, 0.1) == pytest.approx(0.1 + 0.9 * 0.5**3)  # 0.2125
    assert rule.density_at(18, 0.1) == pytest.approx(0.1 + 0.9 * 0.2**3)
    assert rule.density_at(20, 0.1) == pytest.approx(0.1)
    assert rule.density_at(99, 0.1) == pytest.approx(0.1)  # stays at the final density


def test_pruning_drops_the_smallest_magnitudes_down_to_the_scheduled_count():
    w = torch.tensor([[0.5, -0.1, 0.0, 0.3, -0.7, 0.2, 0.05, -0.4]])
    m = torch.tensor([[True, True, False, True, True, True, True, True]])  # 7 active
    rule = GradualPruning((0.25,), start=0, end=10)
    # at step 5: density 0.25 + 0.75/8 = 0.34375 of 8 -> keep round(2.75) = 3
    change = rule.change([w], [m], 0.0, 5, torch.Generator())
    assert change.masks[0].tolist() == [[True, False, False, False, True, False, False, True]]
    assert change.dropped[0].sum() == 4 and not change.grown[0].any()
    # at the end: keep 2 of 8
    final = rule.change([w], change.masks, 0.0, 10, torch.Generator()).masks[0]
    assert final.tolist() == [[True, False, False, False, True, False, False, False]]


def _pruned_network(final_density=0.2):
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(2, [8, 32, 32, 2], g)
    config = SparsityConfig(
        topology="prune",
        lambdas=None,
        density=final_density,
        schedule=TopologySchedule(update_period=5, stop_step=41),
        prune_start=10,
        prune_end=40,
    )
    layers = config.build(net, g)
    optimizer = Adam(net.parameters(), lr=1e-2, weight_decay=1e-2)
    layers.attach_optimizer(optimizer)
    return net, layers, optimizer, g, config


def test_gradual_pruning_follows_its_schedule_and_never_revives_a_weight():
    net, layers, optimizer, g, config = _pruned_network()
    assert all(bool(m.all()) for m in layers.masks)  # starts dense
    finals = config.layer_densities(net.shapes)
    rule = layers.rule
    previous = [m.clone() for m in layers.masks]
    for step in range(1, 61):
        x = torch.randn(2, 16, 8, generator=g)
        optimizer.zero_grad()
        net(x).square().mean().backward()
        layers.mask_gradients(step)
        optimizer.step()
        layers.maybe_update(step)
        for i, (weight, mask) in enumerate(zip(layers.weights, layers.masks, strict=True)):
            assert (weight[~mask] == 0).all()
            assert not (mask & ~previous[i]).any()  # nothing regrows
            assert (optimizer.state[weight]["exp_avg"][~mask] == 0).all()
            last_update = min(step // 5 * 5, 40)
            n = mask[0].numel()
            expected = max(1, round(rule.density_at(last_update, finals[i]) * n))
            assert (mask.sum(dim=(1, 2)) == expected).all()
        previous = [m.clone() for m in layers.masks]
    for mask, final in zip(layers.masks, finals, strict=True):  # the count ER would draw
        assert int(mask[0].sum()) == round(final * mask[0].numel())


def test_magnitude_target_follows_the_pruned_count():
    net, layers, optimizer, g, _ = _pruned_network()
    target_net = StackedMLP(2, [8, 32, 32, 2], g)
    target_net.load_state_dict(net.state_dict())
    target = SparseTarget([target_net.weights[i] for i in layers.indices], layers, "magnitude")
    for step in range(1, 51):
        optimizer.zero_grad()
        net(torch.randn(2, 16, 8, generator=g)).square().mean().backward()
        layers.mask_gradients(step)
        optimizer.step()
        layers.maybe_update(step)
        with torch.no_grad():
            torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), 0.05)
        target.after_polyak()
        for t, mask in zip(target.targets, layers.masks, strict=True):
            assert torch.equal((t != 0).sum(dim=(1, 2)), mask.sum(dim=(1, 2)))


def test_nm_mask_has_n_of_every_m():
    mask = nm_mask(3, 5, 16, 2, 4, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 5, 16)
    assert (mask.reshape(-1, 4).sum(1) == 2).all()
    with pytest.raises(ValueError, match="divisible by 4"):
        nm_mask(1, 2, 6, 2, 4, torch.Generator())


@pytest.mark.parametrize("rule", [SET("magnitude", group=4), RigL("magnitude", group=4)])
def test_nm_regrowth_stays_in_the_group_it_left(rule):
    # two groups of 4, 2 active each; drop fraction 0.25 of 4 -> the single smallest, 0.01
    w = torch.tensor([[0.9, 0.01, 0.0, 0.0, 0.5, 0.0, 0.0, -0.6]])
    m = torch.tensor([[True, True, False, False, True, False, False, True]])
    grad = torch.tensor([[0.0, 0.0, 0.1, 0.2, 0.0, 9.0, 8.0, 0.0]])  # group 2 is "hotter"
    change = prune_and_grow([w], [m], 0.25, rule, torch.Generator().manual_seed(0), [grad])
    assert change.dropped[0].nonzero().tolist() == [[0, 1]]
    grown = change.grown[0].nonzero()[:, 1].tolist()
    assert len(grown) == 1 and grown[0] in (2, 3)  # regrown in the first group
    if isinstance(rule, RigL):
        assert grown == [3]  # largest gradient within the group
    assert (change.masks[0].reshape(-1, 4).sum(1) == 2).all()


def test_nm_config_leaves_layers_with_an_odd_fan_in_dense():
    config = SparsityConfig(topology="static", lambdas=None, nm=(2, 4))
    assert config.layer_densities([(17, 256), (256, 256), (256, 6)]) == [1.0, 0.5]
    with pytest.raises(SparsityError, match="0 < N < M"):
        SparsityConfig(nm=(4, 4))
    with pytest.raises(SparsityError, match="N:M"):
        SparsityConfig(topology="prune", nm=(2, 4))


@pytest.mark.parametrize(("inputs", "hidden", "density"), [(3, 64, 0.13), (17, 32, 0.8)])
def test_a_layer_whose_connections_round_to_all_of_it_is_left_dense(inputs, hidden, density):
    """Kept as sparse with no free position, it had SET drop and regrow the same connections,
    zeroing their weights at every update while it reported none moved."""
    generator = torch.Generator().manual_seed(0)
    config = SparsityConfig(lambdas=None, density=density)
    layers = config.build(StackedMLP(1, [inputs, hidden, hidden, 1], generator), generator)
    for mask in layers.masks:
        assert mask.sum() < mask.numel()
    assert layers.masks  # the others stay sparse
