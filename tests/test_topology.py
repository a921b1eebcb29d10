"""Prune-and-grow on tiny tensors whose answers are worked out by hand."""

import pytest
import torch

from dstrl.sparse.engine import MaskedLayers
from dstrl.sparse.masks import nm_mask, random_mask
from dstrl.sparse.schedule import TopologySchedule
from dstrl.sparse.topology import SET, lowest, prune_and_grow

INF = float("inf")


def test_lowest_takes_a_different_count_per_row_and_never_inf():
    scores = torch.tensor([[3.0, 1.0, 2.0, INF], [0.5, INF, 0.1, 0.2]])
    (chosen,) = lowest([scores], [torch.tensor([2, 3])])
    assert chosen.tolist() == [[False, True, True, False], [True, False, True, True]]


def test_lowest_ranks_layers_of_different_widths_together():
    a = torch.tensor([[5.0, 4.0]])
    b = torch.tensor([[1.0, 9.0, 0.0]])
    ca, cb = lowest([a, b], [torch.tensor([1]), torch.tensor([2])])
    assert ca.tolist() == [[False, True]]
    assert cb.tolist() == [[True, False, True]]


def test_magnitude_drop_removes_the_smallest_absolute_weights():
    w = torch.tensor([[0.5, -0.1, 0.3, -0.9, 0.0, 0.2, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 1, 0, 1, 0, 0]], dtype=torch.bool)  # 5 active
    (dropped,) = SET("magnitude").drop([w], [m], 0.4)  # round(0.4 * 5) = 2
    assert dropped.tolist() == [[False, True, False, False, False, True, False, False]]


def test_signed_drop_takes_the_fraction_from_each_sign_separately():
    # positives 0.5, 0.3, 0.2, 0.8 (4) -> drop round(0.5*4)=2 smallest: 0.2, 0.3
    # negatives -0.1, -0.9 (2)       -> drop round(0.5*2)=1 closest to zero: -0.1
    w = torch.tensor([[0.5, -0.1, 0.3, -0.9, 0.2, 0.8]])
    m = torch.ones_like(w, dtype=torch.bool)
    (dropped,) = SET("signed").drop([w], [m], 0.5)
    assert dropped.tolist() == [[False, True, True, False, True, False]]


def test_grow_prefers_never_active_positions_and_keeps_the_count():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.5, 0.01, 0.3, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    change = prune_and_grow([w], [m], 0.34, SET("magnitude"), g)  # drop 1: index 1
    assert change.dropped[0].tolist() == [[False, True, False, False, False]]
    assert change.grown[0].sum() == 1
    assert not (change.grown[0] & m).any()  # grows among previously inactive (3 or 4)
    assert change.masks[0].sum() == 3


def test_a_full_layer_regrows_what_it_dropped():
    # nothing else is free, so the dropped connection is the only place to grow
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.5, 0.01, 0.3]])
    m = torch.ones_like(w, dtype=torch.bool)
    change = prune_and_grow([w], [m], 0.34, SET("magnitude"), g)
    assert change.grown[0].tolist() == change.dropped[0].tolist()
    assert change.masks[0].all()


def test_members_are_independent_and_counts_constant_per_row():
    g = torch.Generator().manual_seed(1)
    masks = random_mask(4, 16, 8, 0.3, g).view(4, -1)
    weights = torch.randn(4, 128, generator=g) * masks
    change = prune_and_grow([weights], [masks], 0.25, SET("signed"), g)
    assert torch.equal(change.masks[0].sum(1), masks.sum(1))
    assert torch.equal(change.grown[0].sum(1), change.dropped[0].sum(1))
    assert (change.grown[0].sum(1) > 0).all()
    assert not torch.equal(change.grown[0][0], change.grown[0][1])  # own random draws


def test_random_mask_has_exact_counts_per_member():
    mask = random_mask(3, 10, 20, 0.25, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 10, 20) and mask.dtype == torch.bool
    assert mask.sum(dim=(1, 2)).tolist() == [50, 50, 50]


def test_schedule_period_stop_and_cosine():
    s = TopologySchedule(update_period=10, drop_fraction=0.2, stop_step=35)
    assert [t for t in range(0, 50) if s.is_update_step(t)] == [10, 20, 30]
    c = TopologySchedule(update_period=10, drop_fraction=0.2, decay="cosine", stop_step=40)
    assert c.drop_fraction_at(0) == 0.2
    assert abs(c.drop_fraction_at(20) - 0.1) < 1e-12
    assert c.drop_fraction_at(40) < 1e-12


def test_rigl_grows_where_the_dense_gradient_is_largest():
    from dstrl.sparse.topology import RigL

    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.5, 0.01, 0.3, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    grad = torch.tensor([[9.0, 0.0, 0.0, 0.1, -0.7, 0.4]])  # inactive: |0.1|, |-0.7|, |0.4|
    change = prune_and_grow([w], [m], 0.67, RigL("magnitude"), g, [grad])  # drop 2: 0.01, 0.3
    assert change.dropped[0].tolist() == [[False, True, True, False, False, False]]
    assert change.grown[0].tolist() == [[False, False, False, False, True, True]]


def test_rigl_regrows_a_just_dropped_connection_where_its_gradient_is_largest():
    """RigL ranks every position inactive after the drop (Evci et al., Algorithm 1); one regrown
    stays as it was, neither dropped nor grown. SET regrows it only where nothing else is free."""
    from dstrl.sparse.topology import RigL

    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.5, 0.01, 0.3, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    grad = torch.tensor([[0.0, 5.0, 0.0, 0.1, -0.7, 0.4]])  # the dropped 0.01 has the largest
    change = prune_and_grow([w], [m], 0.67, RigL("magnitude"), g, [grad])  # drops 0.01, 0.3
    assert change.masks[0].tolist() == [[True, True, False, False, True, False]]
    assert change.dropped[0].tolist() == [[False, False, True, False, False, False]]
    assert change.grown[0].tolist() == [[False, False, False, False, True, False]]
    change = prune_and_grow([w], [m], 0.67, SET("magnitude"), g)
    assert not (change.masks[0] & change.dropped[0]).any()


def test_rigl_without_gradients_is_an_error():
    import pytest

    from dstrl.sparse.topology import RigL

    w, m = torch.ones(1, 4), torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match="dense gradients are required"):
        prune_and_grow([w], [m], 0.5, RigL(), torch.Generator())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda g: SET("abs"), "unknown drop score 'abs'"),  # dropped by the signed score
        (lambda g: TopologySchedule(decay="bogus"), "unknown decay 'bogus'"),
        (lambda g: random_mask(1, 4, 4, 2.0, g), r"density must be in \(0, 1\], got 2.0"),
        (lambda g: random_mask(1, 4, 4, -0.5, g), r"density must be in \(0, 1\]"),  # kept one
        (lambda g: nm_mask(1, 4, 4, 4, 2, g), "needs 0 < N < M, got 4:2"),
        (
            lambda g: MaskedLayers(
                [torch.zeros(2, 2)], [torch.ones(2, 2, dtype=torch.bool)]
            ).update_topology(0.1),
            "static masks",
        ),
    ],
)
def test_the_core_refuses_choices_it_does_not_know(make, message):
    """The core used on its own: each was accepted as another choice, or failed in an assert
    or deep inside torch."""
    with pytest.raises(ValueError, match=message):
        make(torch.Generator().manual_seed(0))


def test_lowest_takes_at_most_a_whole_row():
    """A drop bound past a tiny layer's width (round(f·n) + 1) was top-k out of range."""
    (chosen,) = lowest([torch.tensor([[2.0, 1.0]])], [torch.tensor([2])], [torch.tensor([3])])
    assert chosen.tolist() == [[True, True]]


def test_set_keeps_a_connection_it_regrows_where_it_was_dropped():
    """With fewer free positions than drops, SET regrows some just-dropped connections in
    place: they were zeroed and their moments cleared, yet counted as no change."""
    w = torch.tensor([[0.1, 0.2, 0.9, 0.0]])
    m = torch.tensor([[True, True, True, False]])  # one free position, two dropped
    change = prune_and_grow([w], [m], 2 / 3, SET("magnitude"), torch.Generator().manual_seed(0))
    assert change.masks[0].sum() == 3
    assert change.dropped[0].sum() == 1 and change.grown[0].tolist() == [
        [False, False, False, True]
    ]
    kept = change.masks[0] & ~change.grown[0]
    assert (kept == m & ~change.dropped[0]).all()  # the regrown one counts as never dropped


@pytest.mark.parametrize("static", [False, True])
def test_a_recycled_unit_keeps_its_n_of_m(static):
    """ReDo redrew a recycled unit's connections over its whole row, breaking its N:M groups
    for the rest of the run (SET regrows within a group what the group lost); static masks
    have no rule to take the group from."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 6, 8)
    mask = nm_mask(2, 6, 8, 2, 4, generator)
    if static:
        layers = MaskedLayers([weight], [mask], generator=generator, group=4)
    else:
        schedule = TopologySchedule(update_period=1)
        layers = MaskedLayers([weight], [mask], SET(group=4), schedule, generator)
    before = layers.masks[0].clone()
    rows = torch.zeros(2, 6, dtype=torch.bool)
    rows[:, ::2] = True
    layers.redraw_rows(0, rows)
    after = layers.masks[0]
    assert (after.reshape(2, 6, 2, 4).sum(-1) == 2).all()
    assert torch.equal(after[:, 1::2], before[:, 1::2]) and not torch.equal(after, before)
