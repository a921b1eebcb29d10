"""Parameter and FLOP counts worked out by hand on a tiny TD3 (obs 3, action 1, hidden 4)."""

import numpy as np
import torch

from dstrl.agents.td3 import TD3, TD3Config
from dstrl.sparse import LayerShape, forward_flops, training_flops
from dstrl.sparse.config import SparsityConfig


def _agent(sparsity=None):
    return TD3(
        3,
        np.array([-1.0]),
        np.array([1.0]),
        1,
        TD3Config(hidden_sizes=(4,), batch_size=2),
        sparsity,
        torch.Generator().manual_seed(0),
    )


def test_layer_formulas():
    layer = LayerShape(n_in=3, n_out=4, active=5)
    assert layer.params == 9 and layer.dense_params == 16
    assert forward_flops([layer], batch=2) == 2 * (2 * 5 + 4)
    assert training_flops(10) == 30


def test_dense_td3_by_hand():
    cost = _agent().cost()
    # actor 3->4->1: weights 12 + 4, biases 4 + 1; critic 4->4->1: 16 + 4 + 4 + 1; two critics
    assert cost["params"] == 21 + 2 * 25
    assert cost["actor_params"] == 21 and cost["critic_params"] == 50
    # forward per sample: actor (2*12+4) + (2*4+1) = 37, critic (2*16+4) + (2*4+1) = 45
    assert cost["inference_flops"] == 37
    batch = 2
    target = batch * (37 + 2 * 45)  # target actor + both target critics
    critic_step = 2 * 3 * batch * 45  # both critics, forward + backward
    actor_step = 3 * batch * (37 + 45)  # actor through the first critic, every 2nd step
    assert cost["train_flops"] == target + critic_step + actor_step // 2


def test_sparse_counts_come_from_the_masks():
    sparsity = SparsityConfig(topology="static", lambdas=(0.5, 1.0))
    agent = _agent(sparsity)
    actor_in = int(agent.actor_sparse.masks[0].sum())
    critic_in = int(agent.critic_sparse.masks[0].sum()) // 2  # per critic (2 members)
    assert actor_in == round(0.5 * 7 / 12 * 12) and critic_in == round(0.5 * 8 / 16 * 16)
    cost, dense = agent.cost(), agent.cost(dense=True)
    assert cost["params"] == dense["params"] - (12 - actor_in) - 2 * (16 - critic_in)
    assert cost["inference_flops"] == dense["inference_flops"] - 2 * (12 - actor_in)
    assert dense == _agent().cost()


def test_dense_sac_by_hand():
    from dstrl.agents.sac import SAC, SACConfig

    agent = SAC(
        3,
        np.array([-1.0]),
        np.array([1.0]),
        1,
        SACConfig(hidden_sizes=(4,), batch_size=2),
        None,
        torch.Generator().manual_seed(0),
    )
    cost = agent.cost()
    # actor 3->4->2 (mean, log std): weights 12 + 8, biases 4 + 2; critic 4->4->1 as for TD3
    assert cost["actor_params"] == 26 and cost["critic_params"] == 50
    actor, critic = 2 * 12 + 4 + 2 * 8 + 2, 45  # forward FLOPs per sample
    assert cost["inference_flops"] == actor
    batch = 2
    target = batch * (actor + 2 * critic)  # next actions from the online actor, target critics
    critic_step = 2 * 3 * batch * critic
    actor_step = 3 * batch * (actor + 2 * critic)  # through both critics, every step
    assert cost["train_flops"] == target + critic_step + actor_step


def test_dense_gradient_flops_only_where_connections_grow_by_gradient():
    from dstrl.sparse.schedule import TopologySchedule

    def step_flops(topology, grow):
        schedule = TopologySchedule(update_period=2)
        sparsity = SparsityConfig(
            topology=topology, lambdas=(0.5, 1.0), grow=grow, schedule=schedule
        )
        return _agent(sparsity).cost()["train_flops"]

    assert step_flops("set", "gradient") > step_flops("set", "random")
    assert step_flops("static", "gradient") == step_flops("static", "random")


def test_the_dense_gradients_are_charged_by_the_rule_that_grows_not_by_its_name():
    """A growth rule of one's own that needs gradients (a SET subclass that grows by gradient)
    was charged as SET: the cost read the config's ``grow`` name, not the rule."""
    from dataclasses import replace

    from dstrl.sparse.topology import RigL

    def agent(sparsity):
        return TD3(3, np.array([-1.0]), np.array([1.0]), 1, TD3Config((16, 16)), sparsity,
                   torch.Generator().manual_seed(0))  # fmt: skip

    config = SparsityConfig(lambdas=None, density=0.5)
    by_name = agent(replace(config, grow="gradient")).cost()["train_flops"]
    own = agent(config)
    set_cost = own.cost()["train_flops"]
    for layers in (own.actor_sparse, own.critic_sparse):
        layers.rule = RigL(layers.rule.drop_score)
    assert own.cost()["train_flops"] == by_name > set_cost
