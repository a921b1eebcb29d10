"""Target-network sparsity: every option honoured; magnitude pruning equals a brute-force top-k."""

import pytest
import torch

from dstrl.nets import StackedMLP
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.engine import MaskedLayers
from dstrl.sparse.kernels import Connections
from dstrl.sparse.masks import random_mask
from dstrl.sparse.schedule import TopologySchedule
from dstrl.sparse.target import (
    SparseTarget,
    _PaddedRows,
    prune_to_count,
    prune_to_count_tensor,
)
from dstrl.sparse.topology import SET


def _compiled(target, outside):
    return prune_to_count([target], [outside])


def _listed(target, outside):
    """The compiled kernel over listed positions: the connections, every nonzero entry and
    some positions that are neither (a layer computed by its connections lists a superset)."""
    g = torch.Generator().manual_seed(9)
    extra = torch.rand(target.shape, generator=g) < 0.2
    listing = Connections.of(~outside | (target != 0) | extra)
    return prune_to_count([target], [outside], [listing])


def _tensor(target, outside):
    """The tensor version, told the exact number of challengers of its busiest row."""
    challengers = ((target != 0) & outside).flatten(1).sum(dim=1)
    prune_to_count_tensor(target, outside, int(challengers.max()))


def _tensor_loose(target, outside):
    """The tensor version, told only that no row has more challengers than entries."""
    prune_to_count_tensor(target, outside, target.shape[-2] * target.shape[-1])


# the compiled CPU kernel (what prune_to_count runs here), the same over listed positions (layers
# computed by their connections) and the tensor version (GPUs) with a tight and a loose bound
TENSOR_PRUNERS = [_tensor, _tensor_loose]
PRUNERS = pytest.mark.parametrize("prune", [_compiled, _listed, *TENSOR_PRUNERS])


@PRUNERS
def test_prune_to_count_by_hand(prune):
    # support: positions 0,1,2 (3 connections); position 3 entered with |0.25| > |0.1|
    target = torch.tensor([[[0.5, -0.1, 0.3, 0.25, 0.0]]])
    outside = torch.tensor([[[False, False, False, True, True]]])
    prune(target, outside)
    assert torch.equal(target, torch.tensor([[[0.5, 0.0, 0.3, 0.25, 0.0]]]))
    assert outside.tolist() == [[[False, True, False, False, True]]]


@PRUNERS
def test_prune_to_count_small_challenger_is_removed(prune):
    target = torch.tensor([[[0.5, -0.1, 0.3, 0.01]]])
    outside = torch.tensor([[[False, False, False, True]]])
    prune(target, outside)
    assert torch.equal(target, torch.tensor([[[0.5, -0.1, 0.3, 0.0]]]))
    assert outside.tolist() == [[[False, False, False, True]]]


@PRUNERS
@pytest.mark.parametrize(
    ("seed", "shape"), [(s, (3, 12, 10)) for s in range(5)] + [(5, (2, 40, 23))]
)
def test_prune_to_count_equals_brute_force_top_k(prune, seed, shape):
    """Rows of one block, and of several blocks and a tail, two of them with neither
    connections nor challengers."""
    g = torch.Generator().manual_seed(seed)
    members, n_out, n_in = shape
    support = (torch.rand(members, n_out, n_in, generator=g) < 0.4).float()
    target = torch.randn(members, n_out, n_in, generator=g) * support
    challengers = (torch.rand(members, n_out, n_in, generator=g) < 0.2).float() * (1 - support)
    for mask in (support, target, challengers):  # a block (256 entries) of nothing but zeros
        mask.view(members, -1)[:, 256:512] = 0
    target += challengers * torch.randn(members, n_out, n_in, generator=g) * 0.5
    counts = support.sum(dim=(1, 2)).long()
    expected = target.clone().view(members, -1)
    for row, k in enumerate(counts.tolist()):  # the reference: keep the k largest |w|
        keep = expected[row].abs().topk(k).indices
        pruned = torch.zeros_like(expected[row])
        pruned[keep] = expected[row][keep]
        expected[row] = pruned
    outside = support == 0
    prune(target, outside)
    assert torch.equal(target.view(members, -1), expected)
    assert torch.equal((~outside).sum(dim=(1, 2)), counts)
    assert torch.equal(~outside, target != 0)


def _targets(mode):
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(2, [4, 16, 16, 1], g)
    config = SparsityConfig(lambdas=(2.0, 4.0), schedule=TopologySchedule(1, 0.3), target=mode)
    layers = config.build(net, g)
    target_net = StackedMLP(2, [4, 16, 16, 1], g)
    target_net.load_state_dict(net.state_dict())
    weights = [target_net.weights[i] for i in range(2)]
    return net, layers, target_net, SparseTarget(weights, layers, mode), g


@pytest.mark.parametrize("mode", ["magnitude", "online-mask", "dense"])
def test_target_options_after_a_topology_change(mode):
    net, layers, target_net, sparse_target, g = _targets(mode)
    with torch.no_grad():
        for _ in range(3):
            layers.update_topology(0.3)
            for w, m in zip(layers.weights, layers.masks, strict=True):
                w.add_(torch.randn(w.shape, generator=g) * m)  # grown weights become non-zero
            torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), 0.5)
            sparse_target.after_polyak()
    counts = [m.sum(dim=(1, 2)) for m in layers.masks]
    nonzero = [(w != 0).sum(dim=(1, 2)) for w in sparse_target.targets]
    if mode == "magnitude":
        assert all(torch.equal(c, n) for c, n in zip(counts, nonzero, strict=True))
    elif mode == "online-mask":
        for w, m in zip(sparse_target.targets, layers.masks, strict=True):
            assert (w[~m] == 0).all()
    else:
        assert any((n > c).any() for c, n in zip(counts, nonzero, strict=True))


def test_a_static_topology_is_pruned_once_then_skipped():
    net, layers, target_net, sparse_target, g = _targets("magnitude")
    with torch.no_grad():
        torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), 0.5)
        sparse_target.after_polyak()
        assert sparse_target._covered_at == layers.version  # supports cover the online masks
        for _ in range(3):
            for w, m in zip(layers.weights, layers.masks, strict=True):
                w.add_(torch.randn(w.shape, generator=g) * m)
            torch._foreach_lerp_(list(target_net.parameters()), list(net.parameters()), 0.5)
            sparse_target.after_polyak()  # skipped, and still exact: nothing can enter
        for w, m in zip(sparse_target.targets, layers.masks, strict=True):
            assert (w[~m] == 0).all()
        layers.update_topology(0.3)
        assert sparse_target._covered_at != layers.version  # a change re-arms the pruning


@pytest.mark.parametrize(
    ("n_out", "n_in", "k"), [(16, 16, 3), (7, 23, 40), (5, 3, 15), (64, 64, 1)]
)
@pytest.mark.parametrize("largest", [True, False])
def test_block_top_k_equals_top_k(n_out, n_in, k, largest):
    from dstrl.sparse.target import _Blocks

    score = torch.randn(3, n_out * n_in, generator=torch.Generator().manual_seed(k))
    blocks = _Blocks(score, largest)
    values, indices = blocks.top(k)
    expected = score.topk(k, dim=1, largest=largest)
    assert torch.equal(values, expected.values)
    assert torch.equal(score.gather(1, indices), expected.values)


@PRUNERS
def test_prune_to_count_with_more_swaps_than_its_first_window(prune):
    g = torch.Generator().manual_seed(7)
    order = torch.randperm(400, generator=g)
    support = torch.zeros(400)
    support[order[:200]] = 1.0
    target = torch.zeros(400)
    target[order[:200]] = torch.rand(200, generator=g) * 1e-3  # small connections
    target[order[200:350]] = 1.0 + torch.rand(150, generator=g)  # 150 large challengers
    expected = torch.zeros(400)
    keep = target.abs().topk(200).indices
    expected[keep] = target[keep]
    target, outside = target.view(1, 20, 20), support.view(1, 20, 20) == 0
    prune(target, outside)
    assert torch.equal(target.view(-1), expected)
    assert outside.sum() == 200 and torch.equal(~outside, target != 0)


@PRUNERS
@pytest.mark.parametrize("seed", range(3))
def test_prune_to_count_with_hundreds_of_swaps_spread_over_every_block(prune, seed):
    """Rows of 64 blocks whose swaps (hundreds, a few per block, as after a topology change)
    need the merge to read ever more blocks: the kept entries are still the top k."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 64, 128)  # two members, rows of 8192 entries
    support = torch.rand(shape, generator=g) < 0.4
    target = torch.randn(shape, generator=g) * support
    challengers = (torch.rand(shape, generator=g) < 0.05) & ~support
    target += challengers * torch.randn(shape, generator=g) * 0.1  # beat the weakest few
    counts = support.sum(dim=(1, 2))
    flat = target.view(2, -1)
    expected = torch.zeros_like(flat)
    swaps = []
    for row, k in enumerate(counts.tolist()):
        keep = flat[row].abs().topk(k).indices
        expected[row, keep] = flat[row, keep]
        swaps.append(int((~support.view(2, -1)[row, keep]).sum()))
    assert min(swaps) > 100
    outside = ~support
    prune(target, outside)
    assert torch.equal(target.view(2, -1), expected)
    assert torch.equal(~outside, target != 0)


def test_compiled_and_tensor_pruning_agree_on_every_kind_of_row():
    """Rows without challengers, with only losing challengers, with many swaps, without any
    connection, and with the 64-wide blocks of the tensor version cut unevenly."""
    g = torch.Generator().manual_seed(3)
    shape = (6, 37, 23)
    support = (torch.rand(shape, generator=g) < 0.3).float()
    support[4] = 0.0  # no connections at all
    target = torch.randn(shape, generator=g) * support
    scale = torch.tensor([0.0, 1e-4, 1e-2, 1.0, 1.0, 10.0]).view(-1, 1, 1)  # challenger sizes
    challengers = (torch.rand(shape, generator=g) < 0.1).float() * (1 - support)
    target += challengers * torch.randn(shape, generator=g) * scale
    outside = support == 0
    results = []
    for prune in (_compiled, _listed, *TENSOR_PRUNERS):
        t, o = target.clone(), outside.clone()
        entered = prune(t, o)
        results.append((entered, t, o))
    (t1, o1), *others = [(t, o) for _, t, o in results]
    assert [entered for entered, _, _ in results] == [True, True, None, None]
    for t2, o2 in others:
        assert torch.equal(t1, t2) and torch.equal(o1, o2)
    assert torch.equal((~o1).sum(dim=(1, 2)), support.sum(dim=(1, 2)).long())
    assert not torch.equal(o1, outside)  # some challengers did enter


def test_compiled_pruning_of_several_layers_in_one_call():
    g = torch.Generator().manual_seed(4)
    layers = []
    for shape in [(2, 16, 9), (2, 300, 20), (2, 3, 16)]:
        support = torch.rand(shape, generator=g) < 0.4
        target = torch.randn(shape, generator=g) * support
        entered = (torch.rand(shape, generator=g) < 0.2) & ~support
        target += entered * torch.randn(shape, generator=g)
        layers.append((target, ~support))
    copies = [(t.clone(), o.clone()) for t, o in layers]
    middle = layers[1]  # one layer over listed positions, the others over whole rows
    listed = [None, Connections.of(~middle[1] | (middle[0] != 0)), None]
    assert prune_to_count([t for t, _ in layers], [o for _, o in layers], listed)
    for (t1, o1), (t2, o2) in zip(layers, copies, strict=True):
        _tensor(t2, o2)
        assert torch.equal(t1, t2) and torch.equal(o1, o2)


def test_one_padded_merge_prunes_layers_of_every_size_as_each_alone():
    """Layers of different shapes and members (a GPU prunes them in one merge), against the
    compiled kernel layer by layer."""
    g = torch.Generator().manual_seed(12)
    layers = []
    for shape in [(2, 12, 5), (2, 40, 23), (2, 1, 12)]:
        support = torch.rand(shape, generator=g) < 0.4
        challengers = (torch.rand(shape, generator=g) < 0.2) & ~support
        target = torch.randn(shape, generator=g) * (support | challengers)
        layers.append((target, ~support))
    expected = [(t.clone(), o.clone()) for t, o in layers]
    for target, outside in expected:
        _compiled(target, outside)
    targets, outsides = [t for t, _ in layers], [o for _, o in layers]
    most = max(int(((t != 0) & o).flatten(1).sum(1).max()) for t, o in layers)  # the bound
    _PaddedRows(targets).prune(targets, outsides, most)
    for (target, outside), (want, want_outside) in zip(layers, expected, strict=True):
        assert torch.equal(target, want) and torch.equal(outside, want_outside)


@pytest.mark.parametrize("largest", [True, False])
def test_compiled_kth_is_the_kth_value_with_ties_zeros_and_infinity(largest):
    """The merge's bound: the k-th largest (smallest) block extreme, found bit by bit."""
    import numpy as np

    from dstrl.sparse.target_cpu import _kth

    rng = np.random.default_rng(5)
    levels = np.array([0.0, 1e-30, 3e-5, 3e-5 * (1 + 2**-23), 0.25, 7.0, np.inf], np.float32)
    values = np.concatenate([rng.choice(levels, 40), rng.random(40, np.float32)])
    ordered = np.sort(values)[::-1] if largest else np.sort(values)
    for k in range(1, values.size + 1):
        assert _kth(values, k, largest) == ordered[k - 1]
    assert _kth(values, values.size + 1, largest) == (0.0 if largest else np.inf)


@PRUNERS
@pytest.mark.parametrize("seed", range(2))
def test_prune_to_count_with_ties_across_many_blocks(prune, seed):
    """Magnitudes of a few levels, so ties at every bound the merge takes: the kept magnitudes
    are still the k largest, and a challenger enters only if it is larger than every connection
    it displaces (which of equal entries stay is left to each pruner)."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 64, 128)
    support = torch.rand(shape, generator=g) < 0.4
    levels = torch.tensor([1e-3, 2e-3, 4e-3, 8e-3, 1.0])
    sign = torch.randint(2, shape, generator=g) * 2 - 1
    target = levels[torch.randint(len(levels), shape, generator=g)] * sign * support
    challengers = (torch.rand(shape, generator=g) < 0.05) & ~support
    target += challengers * levels[torch.randint(len(levels), shape, generator=g)] * sign
    before, counts = target.clone().view(2, -1).abs(), support.sum(dim=(1, 2))
    outside = ~support
    prune(target, outside)
    assert torch.equal((~outside).sum(dim=(1, 2)), counts)
    assert torch.equal(~outside, target != 0)
    kept = target.view(2, -1).abs()
    entered = (~outside & ~support).view(2, -1)
    dropped = (outside & support).view(2, -1)
    for row, k in enumerate(counts.tolist()):
        top = before[row].sort(descending=True).values[:k]
        assert torch.equal(kept[row].sort(descending=True).values[:k], top)
        assert 0 < entered[row].sum() == dropped[row].sum() < k
        assert before[row][entered[row]].min() > before[row][dropped[row]].max()


@pytest.mark.parametrize("shape", [(32, 16), (2, 3, 32, 16)])
def test_a_sparse_target_of_a_plain_model_is_pruned_to_its_online_count(shape):
    """The core takes weights with any leading member dimensions, none included: the targets'
    pruning unpacked three and failed on a plain (n_out, n_in) layer at density 0.1."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(*shape))
    mask = random_mask(1, 32, 16, 0.1, generator)[0].expand(*shape).clone()
    layers = MaskedLayers([weight], [mask], SET(), TopologySchedule(5, 0.3), generator)
    layers.apply_masks()
    target = SparseTarget([weight.detach().clone()], layers, "magnitude")
    layers.update_topology(0.3, 5)
    target.follow()
    with torch.no_grad():
        target.targets[0].mul_(0.99).add_(weight, alpha=0.01)  # the online support mixes in
    target.after_polyak()
    assert int((target.targets[0] != 0).sum()) == int(layers.masks[0].sum())
