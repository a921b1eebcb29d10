"""The names of the sparse core's choices, in a module without torch: the run's configuration
types its options with them (and so stays light), and the core checks its inputs against them."""

from typing import Literal, get_args

Topology = Literal["static", "set", "prune"]
Growth = Literal["random", "gradient"]
DropScore = Literal["signed", "magnitude"]
Distribution = Literal["er", "uniform"]
Decay = Literal["constant", "cosine"]
TargetMode = Literal["magnitude", "online-mask", "dense"]
KernelChoice = Literal["auto", "masked", "sparse"]

TARGET_MODES: tuple[str, ...] = get_args(TargetMode)
KERNEL_CHOICES: tuple[str, ...] = get_args(KernelChoice)


def check_choice(name: str, value: object, kind: object) -> None:
    """ValueError unless ``value`` is one of the Literal ``kind``'s choices: an unknown one
    would otherwise take some other choice's path without a word."""
    if value not in get_args(kind):
        raise ValueError(f"unknown {name} {value!r}; choose one of {get_args(kind)}")
