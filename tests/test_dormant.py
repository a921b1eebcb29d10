"""Dormant neurons (ReDo): the τ-dormant share on hand-built layers, and recycling in an agent
(the sparse-core invariants of recycling are in test_sparse_invariants.py)."""

import numpy as np
import pytest
import torch

from dstrl.agents.td3 import TD3, TD3Config
from dstrl.dormant import Recycling, dormant_fractions, dormant_units, recycle
from dstrl.nets import StackedMLP
from dstrl.optim import Adam
from dstrl.sparse.config import SparsityConfig


def test_dormant_units_by_hand():
    # mean |h| per unit: 2, 0, 1, 0.1; layer mean 0.775; scores 2.58, 0, 1.29, 0.129
    h = torch.tensor([[[2.0, 0.0, 1.5, 0.1], [2.0, 0.0, 0.5, 0.1]]])
    assert dormant_units([h], 0.1)[0].tolist() == [[False, True, False, False]]
    assert dormant_units([h], 0.2)[0].tolist() == [[False, True, False, True]]
    assert dormant_units([torch.zeros(1, 3, 4)], 0.1)[0].all()  # a dead layer is all dormant


def test_dormant_fraction_of_a_hand_built_network():
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(2, [3, 4, 4, 1], g)
    with torch.no_grad():
        net.weights[0].copy_(torch.eye(4, 3).expand(2, 4, 3))
        net.biases[0].zero_()
        net.weights[1].copy_(torch.eye(4).expand(2, 4, 4))
        net.biases[1].zero_()
        net.biases[1][1, 0] = -100.0  # member 1's second-layer unit 0 never fires
    x = torch.ones(2, 5, 3)  # first layer: units 0-2 give 1, unit 3 (no input) gives 0
    first, second = dormant_fractions(net, x, 0.1)
    assert first.tolist() == [0.25, 0.25]
    assert second.tolist() == [0.25, 0.5]


def test_recycled_units_of_consecutive_layers_all_end_with_zero_outgoing_weights():
    """ReDo zeroes every recycled unit's outgoing weights. Layer by layer, recycling a unit of
    the next layer drew its fresh incoming weights over the zeroed ones of this layer's units."""
    g = torch.Generator().manual_seed(0)
    net = StackedMLP(2, [3, 5, 5, 1], g)
    optimizer = Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 4, 3)).sum().backward()
    optimizer.step()
    first = torch.tensor([[False, True, False, True, False], [True, False, False, False, False]])
    second = torch.tensor([[False, False, True, False, False], [True, False, False, False, True]])
    assert recycle(net, [first, second], optimizer, None, g) == 6
    for units, outgoing in ((first, net.weights[1]), (second, net.weights[2])):
        columns = units.unsqueeze(-2).expand_as(outgoing)
        assert (outgoing[columns] == 0).all()
        for moment in ("exp_avg", "exp_avg_sq"):
            assert (optimizer.state[outgoing][moment][columns] == 0).all()
    incoming = net.weights[1][second.unsqueeze(-1).expand_as(net.weights[1])]
    # fresh from the live units only: member 0's unit (3 of 5 live), member 1's two (4 of 5)
    assert (incoming != 0).sum() == 1 * 3 + 2 * 4


@pytest.mark.parametrize("sparse", [False, True])
def test_td3_recycles_dormant_neurons_and_spares_halted_agents(sparse):
    g = torch.Generator().manual_seed(0)
    sparsity = SparsityConfig(lambdas=(1.0, 8.0)) if sparse else None
    config = TD3Config(hidden_sizes=(32, 32), batch_size=16)
    agent = TD3(3, -np.ones(1), np.ones(1), 2, config, sparsity, g, Recycling(period=2))
    with torch.no_grad():  # kill first-layer units 0-3 of both agents' actors
        agent.actor.weights[0][:, :4] = 0.0
        agent.actor.biases[0][:, :4] = -1.0
    agent.halt(torch.tensor([False, True]))
    counts = [c.clone() for c in agent.actor_sparse.active_counts()] if sparse else []
    batch = torch.randn(2, 16, 3, generator=g), torch.rand(2, 16, 1, generator=g) * 2 - 1
    dead = agent.dormant(*batch, 0.1)["dormant/actor_h1"]
    assert dead[0] >= 4 / 32 and dead[1] == 1.0  # a halted (zeroed) agent is all dormant
    agent.update(*batch, torch.zeros(2, 16), batch[0], torch.zeros(2, 16))
    assert agent.recycled == 0  # update 1: not a recycling step
    agent.update(*batch, torch.zeros(2, 16), batch[0], torch.zeros(2, 16))
    assert agent.pop_recycled() >= 4
    assert (agent.actor.weights[0][0, :4] != 0).any(dim=1).all()
    assert agent.dormant(*batch, 0.1)["dormant/actor_h1"][0] < dead[0]
    for param in agent.actor.parameters():
        assert (param[1] == 0).all()  # the halted agent stays at zero
    if sparse:
        after = agent.actor_sparse.active_counts()
        assert all(torch.equal(a, b) for a, b in zip(counts, after, strict=True))
