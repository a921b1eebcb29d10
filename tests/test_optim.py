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
