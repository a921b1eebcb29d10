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


def _episodes(capacity=10):
    """Transitions 0-5 of one member: obs = index, reward 2^index; 1 terminates its episode,
    3 is truncated; next_obs = 100 + index."""
    buffer = ReplayBuffer(1, capacity, 1, 1, torch.device("cpu"))
    for i in range(6):
        terminated, ended = np.array([i == 1], float), np.array([i in (1, 3)])
        x, nxt = np.full((1, 1), float(i)), np.full((1, 1), 100.0 + i)
        buffer.add(x, x, np.array([2.0**i]), nxt, terminated, ended)
    return buffer


# start: (reward sum, next_obs, terminated, discount) with γ = 0.5 and n = 3, worked by hand
N_STEP_BY_HAND = {
    0: (1 + 0.5 * 2, 101, 1, 0.25),  # 0, then 1 terminates: no bootstrap
    1: (2, 101, 1, 0.5),  # terminates at once
    2: (4 + 0.5 * 8, 103, 0, 0.25),  # 3 is truncated: bootstrap from its true next state
    3: (8, 103, 0, 0.5),
    4: (16 + 0.5 * 32, 105, 0, 0.25),  # 5 is the newest transition: the window stops there
    5: (32, 105, 0, 0.5),
}


def _check_n_step(batch):
    for start, reward, nxt, term, discount in zip(
        batch.obs.flatten().tolist(),
        batch.reward.flatten().tolist(),
        batch.next_obs.flatten().tolist(),
        batch.terminated.flatten().tolist(),
        batch.discount.flatten().tolist(),
        strict=True,
    ):
        assert (reward, nxt, term, discount) == N_STEP_BY_HAND[int(start)]


def test_n_step_targets_by_hand_with_episode_ends_inside_the_window():
    batch = _episodes().sample(200, torch.Generator().manual_seed(0), n_step=3, gamma=0.5)
    assert set(batch.obs.flatten().tolist()) == set(range(6))  # every start was drawn
    _check_n_step(batch)


def test_n_step_windows_wrap_around_the_storage():
    buffer = _episodes(capacity=6)
    rows, ends = buffer.rows.clone(), buffer.ends.clone()
    shift = 4  # the same transitions, stored from slot 4 on (so 2 wraps to slot 0)
    buffer.rows, buffer.ends = rows.roll(shift, 1), ends.roll(shift, 1)
    buffer.position = shift
    _check_n_step(buffer.sample(200, torch.Generator().manual_seed(0), n_step=3, gamma=0.5))


def test_one_step_samples_are_the_stored_rows():
    batch = _episodes().sample(50, torch.Generator().manual_seed(0))
    assert batch.discount == 0.99
    assert torch.equal(batch.reward, 2.0 ** batch.obs.squeeze(-1))
    assert torch.equal(batch.next_obs, batch.obs + 100)


def _population(capacity=10, steps=8):
    """Two members; member e's transition i has obs 10e + i and noise-free action -i."""
    buffer = ReplayBuffer(2, capacity, 1, 1, torch.device("cpu"), policy_actions=True)
    for i in range(steps):
        x = np.array([[float(i)], [10.0 + i]])
        mu = np.full((2, 1), -float(i))
        buffer.add(x, x, np.zeros(2), x, np.zeros(2), np.zeros(2, bool), mu)
    return buffer


def test_dropping_the_oldest_is_per_member_and_sampling_follows():
    buffer = _population()
    buffer.drop_oldest(np.array([True, False]), 0.5)  # member 0 forgets transitions 0-3
    assert buffer.sizes.tolist() == [4, 8]
    obs, mu = buffer.oldest(2)
    assert obs.squeeze(-1).tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert mu.squeeze(-1).tolist() == [[-4.0, -5.0], [0.0, -1.0]]
    batch = buffer.sample(400, torch.Generator().manual_seed(0))
    assert set(batch.obs[0].flatten().tolist()) == {4.0, 5.0, 6.0, 7.0}
    assert set(batch.obs[1].flatten().tolist()) == {10.0 + i for i in range(8)}
    x = np.array([[8.0], [18.0]])
    buffer.add(x, x, np.zeros(2), x, np.zeros(2), np.zeros(2, bool), np.zeros((2, 1)))
    assert buffer.sizes.tolist() == [5, 9]  # a new transition joins both
    restored = ReplayBuffer(2, 10, 1, 1, torch.device("cpu"), policy_actions=True)
    restored.load_state_dict(buffer.state_dict())
    assert restored.sizes.tolist() == [5, 9]
    assert torch.equal(restored.policy_actions, buffer.policy_actions)
    generator = torch.Generator().manual_seed(1)
    again = restored.sample(50, generator, n_step=2)
    same = buffer.sample(50, generator.manual_seed(1), n_step=2)
    assert all(torch.equal(a, b) for a, b in zip(again, same, strict=True))


def test_a_full_buffer_keeps_each_members_dropped_share():
    buffer = _population(capacity=8, steps=12)  # holds 4-11 in both members
    buffer.drop_oldest(np.array([False, True]), 0.25)
    obs, _ = buffer.oldest(1)
    assert obs.squeeze(-1).tolist() == [[4.0], [16.0]]
