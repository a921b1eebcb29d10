"""dstrl: dynamic sparse training for deep reinforcement learning."""

__version__ = "0.1.0"


def load_policy(path, member=None):
    """A trained policy from a file written by ``dstrl export``: ``policy(obs)`` gives actions.

    See ``dstrl.policy.load_policy``; imported on use, so ``import dstrl`` stays light.
    """
    from dstrl.policy import load_policy as load

    return load(path, member)
