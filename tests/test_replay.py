import numpy as np
import torch

from dstrl.data.replay import ReplayBuffer


def _fill(buffer, values):
    for v in values:
        x = np.full((1, 1), float(v))
        buffer.add(x, x, np.array([float(v)]), x, np.zeros(1))


def test_wraps_and_round_trips_exactly():
    a = ReplayBuffer(1, 3, 1, 1, torch.device("cpu"))
    _fill(a, [1, 2, 3, 4])  # 4 overwrote 1
    b = ReplayBuffer(1, 3, 1, 1, torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.rows, b.rows) and (a.position, a.size) == (b.position, b.size) == (1, 3)


def test_an_extended_run_gets_its_transitions_oldest_first():
    small = ReplayBuffer(1, 3, 1, 1, torch.device("cpu"))
    _fill(small, [1, 2, 3, 4])  # holds 4, 2, 3 (4 at the front, position 1)
    big = ReplayBuffer(1, 6, 1, 1, torch.device("cpu"))
    big.load_state_dict(small.state_dict())
    assert big.rows[0, :3, 0].tolist() == [2.0, 3.0, 4.0]
    _fill(big, [5])
    assert big.rows[0, :4, 0].tolist() == [2.0, 3.0, 4.0, 5.0] and big.size == 4


def test_members_sample_their_own_slices():
    buffer = ReplayBuffer(2, 10, 1, 1, torch.device("cpu"))
    for v in range(5):
        x = np.array([[v], [100 + v]], dtype=float)
        buffer.add(x, x, np.array([v, 100.0 + v]), x, np.zeros(2))
    obs, *_ = buffer.sample(64, torch.Generator().manual_seed(0))
    assert (obs[0] < 5).all() and (obs[1] >= 100).all()
