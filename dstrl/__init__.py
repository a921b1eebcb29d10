"""dstrl: dynamic sparse training for deep reinforcement learning."""

__version__ = "0.1.0"
