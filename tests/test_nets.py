"""The stacked MLP's hand-written backward equals autograd's through the same operations."""

import pytest
import torch

from dstrl.nets import StackedMLP, product


def _reference(net, x, members=None):
    """The same network built from differentiable torch operations."""
    last = len(net.weights) - 1
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        if members is not None:
            w, b = w[members], b[members]
        x = torch.baddbmm(b.unsqueeze(1), x, w.mT)
        x = torch.relu(x) if i < last else x
    return torch.tanh(x) if net.output_tanh else x


def _gradients(net, x, out):
    loss = (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum()
    params = [x, *net.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((2, 256, 100), (2, 100, 23)),  # an input layer's weight gradient: computed transposed
        ((2, 100, 256), (2, 256, 23)),  # its input gradient: transposed
        ((2, 6, 100), (2, 100, 256)),  # an output layer's weight gradient: as it is
        ((2, 100, 256), (2, 256, 256)),  # a hidden layer's input gradient: as it is
    ],
)
def test_a_product_equals_bmm_and_is_contiguous(a_shape, b_shape):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(a_shape, generator=g), torch.randn(b_shape, generator=g)
    out = product(a, b)
    assert out.is_contiguous()
    torch.testing.assert_close(out, torch.bmm(a, b))


@pytest.mark.parametrize("tanh", [False, True])
@pytest.mark.parametrize("members", [None, slice(0, None, 2)])
def test_gradients_equal_autograd(tanh, members):
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(4, [5, 7, 6, 3], g, output_tanh=tanh)
    rows = 4 if members is None else 2
    x = torch.randn(rows, 9, 5, generator=g, requires_grad=True)
    ours = net(x, members=members)
    expected = _reference(net, x, members)
    torch.testing.assert_close(ours, expected)
    grads = _gradients(net, x, ours)
    for a, b in zip(grads, _gradients(net, x, expected), strict=True):
        torch.testing.assert_close(a, b)
    if members is not None:  # members that were not used get no gradient
        assert (grads[1][1::2] == 0).all() and (grads[1][0::2] != 0).any()


def test_frozen_passes_gradients_to_the_input_only():
    g = torch.Generator().manual_seed(1)
    net = StackedMLP(2, [3, 8, 1], g)
    x = torch.randn(2, 5, 3, generator=g, requires_grad=True)
    net(x, frozen=True).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    expected = torch.autograd.grad(_reference(net, x).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)


def test_without_gradients_the_output_is_the_same():
    g = torch.Generator().manual_seed(2)
    net = StackedMLP(3, [4, 6, 2], g, output_tanh=True)
    x = torch.randn(3, 5, 4, generator=g)
    with torch.no_grad():
        plain = net(x)
    assert torch.equal(plain, net(x))


@pytest.mark.parametrize("tanh", [False, True])
def test_backward_from_equals_autograd(tanh):
    g = torch.Generator().manual_seed(3)
    net = StackedMLP(2, [4, 8, 8, 2], g, output_tanh=tanh)
    x = torch.randn(2, 6, 4, generator=g)
    target = torch.randn(2, 6, 2, generator=g)
    y, saved = net.forward_saved(x)
    net.backward_from(saved, 2 * (y - target))  # the gradient of the summed squared error
    ours = [p.grad for p in net.parameters()]
    torch.testing.assert_close(y, net(x))
    expected = torch.autograd.grad((_reference(net, x) - target).square().sum(), net.parameters())
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_a_conversion_that_replaces_the_parameters_is_followed():
    """A network reads its parameters from tuples kept beside its ParameterLists: a conversion
    that puts new parameter objects in the lists must reach every pass and every gradient."""
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(2, [3, 8, 1], g)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    old = list(net.parameters())
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        net.to(torch.float64)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    assert all(p is not q for p, q in zip(net.parameters(), old, strict=True))
    y = net(x)
    assert y.dtype == torch.float64
    y.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float64 for p in net.parameters())
    out, saved = net.forward_saved(x)
    net.backward_from(saved, torch.ones_like(out))
    assert all(p.grad.dtype == torch.float64 for p in net.parameters())
