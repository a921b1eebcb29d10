import copy

import torch

from dstrl.optim import Adam


def test_matches_torch_adam_with_l2_weight_decay():
    g = torch.Generator().manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(4, 5, generator=g))
    theirs = torch.nn.Parameter(ours.detach().clone())
    a = Adam([ours], lr=1e-2, weight_decay=1e-3)
    b = torch.optim.Adam([theirs], lr=1e-2, weight_decay=1e-3)
    for _ in range(50):
        grad = torch.randn(4, 5, generator=g)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_state_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    a = Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    a.step()
    b = Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    b.load_state_dict(a.state_dict())
    assert b.param_groups[0]["step"] == 1
    assert torch.equal(next(iter(b.state.values()))["exp_avg"], a.state[p]["exp_avg"])


def test_a_loaded_step_count_drives_the_next_steps():
    """The count lives in a tensor (what a captured graph advances): a checkpoint stores it as
    an integer, and an optimiser loaded from it steps exactly as the one it was saved from."""
    g = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.randn(6, generator=g))
    a = Adam([p], lr=0.1)
    for _ in range(7):
        p.grad = torch.randn(6, generator=g)
        a.step()
    saved = copy.deepcopy(a.state_dict())  # as a checkpoint holds it: not a's own tensors
    assert saved["param_groups"][0]["step"] == 7 and isinstance(
        saved["param_groups"][0]["step"], int
    )
    q = torch.nn.Parameter(p.detach().clone())
    b = Adam([q], lr=0.1)
    b.load_state_dict(saved)
    grad = torch.randn(6, generator=g)
    p.grad, q.grad = grad.clone(), grad.clone()
    a.step()
    b.step()
    assert torch.equal(p, q)
    assert b.state_dict()["param_groups"][0]["step"] == 8
