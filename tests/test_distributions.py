import pytest

from dstrl.sparse.distributions import (
    SparsityError,
    er_densities_for_global,
    er_densities_from_lambdas,
    er_density,
)


def test_er_density_matches_formula():
    # HalfCheetah actor: 17 -> 256 -> 256, λ = 7 and 64 (the release's values)
    assert er_density(17, 256, 7) == pytest.approx(7 * (17 + 256) / (17 * 256))
    assert er_density(256, 256, 64) == pytest.approx(0.5)
    assert er_density(3, 4, 10) == 1.0  # capped


def test_lambdas_above_one_are_an_error_unless_capped():
    with pytest.raises(SparsityError, match="λ ≤ 1.7"):
        er_densities_from_lambdas([(3, 4)], [10])
    assert er_densities_from_lambdas([(3, 4)], [10], allow_dense=True) == [1.0]
    with pytest.raises(SparsityError, match="2 λ values"):
        er_densities_from_lambdas([(3, 4)], [1, 2])


def test_global_density_is_met_exactly_with_er_proportions():
    shapes = [(17, 256), (256, 256)]
    densities = er_densities_for_global(shapes, 0.1)
    total = sum(n_in * n_out for n_in, n_out in shapes)
    active = sum(d * n_in * n_out for d, (n_in, n_out) in zip(densities, shapes, strict=True))
    assert active == pytest.approx(0.1 * total)
    assert densities[0] < 1
    # ER: density ∝ (n_in + n_out) / (n_in n_out)
    ratio = densities[0] / densities[1]
    assert ratio == pytest.approx((273 / (17 * 256)) / (512 / 256**2))


def test_global_density_caps_small_layers_at_one_and_resolves_the_rest():
    # layer 0 (2x4) would exceed density 1 at 90% overall; it is made dense, the rest solved
    shapes = [(2, 4), (100, 100)]
    densities = er_densities_for_global(shapes, 0.9)
    assert densities[0] == 1.0
    assert densities[0] * 8 + densities[1] * 10_000 == pytest.approx(0.9 * 10_008)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_global_density_outside_range_is_rejected(density):
    with pytest.raises(SparsityError, match=r"\(0, 1\]"):
        er_densities_for_global([(4, 4)], density)


def test_first_and_last_layer_choices_with_a_global_density():
    from dstrl.sparse.config import SparsityConfig

    shapes = [(17, 256), (256, 256), (256, 6)]
    every = SparsityConfig(density=0.1, lambdas=None, sparse_output=True)
    assert every.sparse_layer_indices(3) == [0, 1, 2]
    inner = SparsityConfig(density=0.1, lambdas=None, sparse_output=True, dense_input=True)
    assert inner.sparse_layer_indices(3) == [1, 2]
    densities = inner.layer_densities(shapes)
    assert len(densities) == 2  # the budget is spread over hidden and output layers only
    assert densities[0] * 256 * 256 + densities[1] * 256 * 6 == pytest.approx(0.1 * 67_072)
    with pytest.raises(SparsityError, match="dense input layer"):
        SparsityConfig(dense_input=True)  # λ set the input layer's density
