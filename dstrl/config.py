"""The training configuration: one dataclass, one documented field per command-line option."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from dstrl.agents.settings import SACConfig, TD3Config
from dstrl.helptext import DEFAULT_IN_DOCSTRING
from dstrl.sparse.distributions import er_lambda_limit
from dstrl.sparse.kinds import Decay, Distribution, DropScore, Growth, KernelChoice, TargetMode
from dstrl.sparse.schedule import TopologySchedule

if TYPE_CHECKING:  # torch's: imported where the networks are built, not to read a config
    from dstrl.dormant import Recycling
    from dstrl.sparse.config import SparsityConfig

# An algorithm is a family (td3, sac) with a topology prefix: none (dense), static-, ds- (prune
# and grow, the paper's name), prune- (gradual magnitude pruning), rlx2- (RLx2's recipe).
Algo = Literal[
    "td3",
    "static-td3",
    "ds-td3",
    "prune-td3",
    "rlx2-td3",
    "sac",
    "static-sac",
    "ds-sac",
    "prune-sac",
    "rlx2-sac",
]
TOPOLOGIES = {"": "dense", "static": "static", "ds": "set", "prune": "prune", "rlx2": "set"}
DEFAULT_LAMBDAS = (7.0, 64.0)
# λ (input, hidden) of the DS-SAC appendix, per task; other tasks use DEFAULT_LAMBDAS.
SAC_LAMBDAS = {
    "HalfCheetah": (12.0, 80.0),
    "Walker2d": (12.0, 80.0),
    "Hopper": (7.0, 20.0),
    "Ant": (30.0, 64.0),
    "Humanoid": (61.0, 64.0),
}
FAMILY_DEFAULTS = {  # start steps, drop fraction
    "td3": (25_000, 0.05),
    "sac": (10_000, 0.1),
}
# Defaults of the options that the rlx2- preset changes (see TrainConfig.resolve_defaults).
METHOD_DEFAULTS = dict(
    grow="random",
    update_period=1_000,
    decay="constant",
    target_sparsity="magnitude",
    n_step=1,
    n_step_start=0.0,
    replay="uniform",
    buffer_check_every=10_000,
)
# RLx2 (Tan et al., ICLR 2023) as released: 3M environment steps after a 25k warm-up; RigL
# growth and drop by |w|, drop fraction cosine-annealed from 0.5 to 0 over the learning steps,
# every 10^4 updates; targets masked by the online masks; 3-step targets after a tenth of the
# run; the dynamic buffer checked every 10^4 steps.
RLX2_LEARNING_STEPS = 2_975_000
RLX2_PERIOD = 10_000


def check_seeds(first: int, seeds: int) -> None:
    """ConfigError unless seeds first..first+seeds-1 lie in [0, 2**32), which every random
    generator a run seeds (Gymnasium's, NumPy's, torch's) takes."""
    if not 0 <= first <= 2**32 - seeds:
        raise ConfigError(f"--seed must be in [0, 2**32 - --seeds], got {first}")


def runs_apart(algo: str) -> bool:
    """Whether ``algo`` needs schedules of its own and cannot share a population with other
    algorithms (gradual pruning, RLx2)."""
    return topology_of(algo) == "prune" or algo.startswith("rlx2-")


def family_of(algo: str) -> str:
    """td3 or sac, from an algorithm's suffix."""
    return algo.rsplit("-", 1)[-1]


def topology_of(algo: str) -> str:
    """dense, static, set or prune, from an algorithm's prefix."""
    return TOPOLOGIES[algo.rsplit("-", 1)[0] if "-" in algo else ""]


class ConfigError(ValueError):
    """A configuration the user can fix: the message says what is wrong and what to do."""


# What a topology kind never reads: a dense network no sparsity, a static one no topology
# updates, gradual pruning none of their drop and growth (its schedule sets how much it prunes)
SPARSITY = {"density", "distribution", "lambdas", "nm", "sparse_output", "dense_input"}
SPARSITY |= {"target_sparsity"}
TOPOLOGY_UPDATES = {"drop_fraction", "drop_score", "grow", "decay", "freeze_last"}
TOPOLOGY_UPDATES |= {"update_period", "actor_update_period", "actor_topology_stop"}
PRUNING = {"prune_start", "prune_end"}
UNREAD_BY = {
    "dense": SPARSITY | TOPOLOGY_UPDATES | PRUNING,
    "static": TOPOLOGY_UPDATES | PRUNING,
    "set": PRUNING,
    "prune": TOPOLOGY_UPDATES - {"update_period"},
}


def unread_settings(flat: dict) -> set[str]:
    """Settings that a run never reads: the other family's options, the sparsity options of a
    dense network, the topology updates' of a static one (of gradual pruning, all but their
    period), the dynamic buffer's without one (their defaults follow --steps), --distribution
    without --density and --n-step-start with one-step targets; of a population, what none of
    its methods reads. ``flat``: a configuration as JSON, flattened (``td3.batch_size``), of
    this version or an older one."""
    algo = flat["algo"]
    methods = [str(a) for a in algo] if isinstance(algo, list | tuple) else [str(algo)]
    other = "sac" if methods[0].endswith("td3") else "td3"
    unread = {k for k in flat if k.startswith(f"{other}.")}
    with suppress(KeyError):  # an algorithm this version does not know: compared as written
        unread |= set.intersection(*(UNREAD_BY[topology_of(a)] for a in methods))
    if flat.get("replay") != "dynamic":
        unread |= {"buffer_min_size", "buffer_policy_distance", "buffer_check_every"}
    if flat.get("density") is None:
        unread.add("distribution")
    if flat.get("n_step") in (None, 1):
        unread.add("n_step_start")
    return unread


def flat_settings(config: dict, prefix: str = "") -> dict:
    """A configuration as JSON with its agents' settings flattened: ``td3.batch_size``."""
    flat = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _fits(value, hint) -> bool:
    """Whether ``value`` is of the annotated type ``hint`` (no bool is a number; an int is a
    float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_fits, value, args))
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(hint, type) or isinstance(value, hint)


def _described(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_described(a) for a in args)
    if origin is tuple:
        items = {float: "numbers", int: "integers"}.get(args[0]) or f"({_described(args[0])})"
        return f"a tuple of {items}"
    named = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
    return "None" if hint is type(None) else named.get(hint, f"a {hint.__name__}")


def _plain_numbers(config) -> None:
    """NumPy's scalars in ``config`` (a seed from np.arange, say) as Python's numbers, and lists
    as tuples (``hidden_sizes=[256, 256]``), which the checks and config.json take; the
    agents' settings too."""

    def plain(value):  # a scalar only: an array is left to the checks, which name its field
        numpy = type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0
        return value.item() if numpy else value

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            _plain_numbers(value)
        else:
            value = tuple(map(plain, value)) if isinstance(value, tuple | list) else plain(value)
            object.__setattr__(config, f.name, value)  # the agents' settings are frozen


def _check_fields(config, prefix: str = "--") -> None:
    """ConfigError naming the first field of the dataclass ``config`` whose value is not of its
    annotated type or choices (what the command line's parser checks, for configurations built
    in Python); the agents' settings too."""
    for name, hint in typing.get_type_hints(type(config)).items():
        value = getattr(config, name)
        if not _fits(value, hint):
            raise ConfigError(
                f"{prefix}{name.replace('_', '-')} must be {_described(hint)}, not {value!r}"
            )
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{prefix}{name.replace('_', '-')} must be finite, not {value!r}")
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{prefix}{name}.")


@dataclass
class TrainConfig:
    """Train ``seeds`` independent agents in lockstep and write a run directory."""

    algo: Algo | tuple[Algo, ...] = "ds-td3"
    """Family (td3, sac) with a topology prefix: none = dense (sparsity options are ignored);
    static- = fixed sparse topology; ds- = dynamic sparse training (prune and grow, the paper's
    DS-TD3 / DS-SAC); prune- = gradual magnitude pruning from dense; rlx2- = RLx2. Several of
    one family (e.g. td3 static-td3 ds-td3) train side by side as one population, --seeds
    agents each with the same seeds, sharing every other option (dense, static- and ds- only)."""
    env: str = "HalfCheetah-v5"
    """Gymnasium environment id (continuous Box actions)."""
    steps: int = 1_000_000
    """Environment steps per agent."""
    seeds: int = 1
    """Number of independent agents trained together (own seed, env, buffer, masks)."""
    seed: int = 0
    """Seed of the first agent; agent i uses seed + i."""
    out: Annotated[Path | None, DEFAULT_IN_DOCSTRING] = None
    """Run directory (default: runs/<env>-<algo>-s<seed>)."""
    start_steps: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Uniformly random actions before learning starts (default: 25,000 TD3, 10,000 SAC)."""
    eval_every: int = 5_000
    """Evaluate the deterministic policy every this many steps."""
    eval_episodes: int = 10
    """Episodes per evaluation, on separate evaluation environments."""
    density: Annotated[float | None, DEFAULT_IN_DOCSTRING] = None
    """Overall density of the sparse layers (1 - sparsity), spread by --distribution (instead of
    λ)."""
    distribution: Distribution = "er"
    """How --density is spread over the sparse layers: Erdős–Rényi (ERK) or uniformly."""
    lambdas: Annotated[tuple[float, ...] | None, DEFAULT_IN_DOCSTRING] = None
    """ER λ of the input and hidden layers (plus output with --sparse-output); default 7 64, and
    for SAC the DS-SAC appendix's per-task values (HalfCheetah 12 80, Hopper 7 20, ...)."""
    nm: Annotated[str | None, DEFAULT_IN_DOCSTRING] = None
    """N:M structured masks instead of ER, e.g. 2:4 (N of every M consecutive inputs); layers
    whose fan-in is not a multiple of M stay dense."""
    sparse_output: bool = False
    """Make the output layer sparse too (the paper keeps it dense)."""
    dense_input: bool = False
    """Keep the input layer dense (with --density or --nm; with λ, --lambdas sets the input
    layer's density)."""
    drop_fraction: Annotated[float | None, DEFAULT_IN_DOCSTRING] = None
    """Fraction η of each layer's connections replaced per topology update (default: 0.05 TD3,
    0.1 SAC; rlx2-*: 0.5)."""
    drop_score: Annotated[DropScore | None, DEFAULT_IN_DOCSTRING] = None
    """Drop by sign-separated weight (the DS-TD3 release's; the default with random growth) or
    by |w| (RigL's and RLx2's; the default with gradient growth)."""
    grow: Annotated[Growth | None, DEFAULT_IN_DOCSTRING] = None
    """Grow new connections at random (SET, the paper; the default) or where the dense gradient
    is largest (RigL, the rlx2- default; the dense gradient is taken at topology-update steps
    only)."""
    update_period: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Gradient steps between topology updates (e; for prune-: between pruning steps). Default
    1,000; rlx2-: RLx2's 10,000 scaled to the run (1,000 per 297,500 learning steps, between
    1,000 and 10,000)."""
    actor_update_period: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Gradient steps between the actor's topology updates (default: --update-period; rlx2-td3:
    --update-period x --td3.policy-delay, as RLx2 counts the actor's schedule in its own
    optimiser steps)."""
    actor_topology_stop: float = 1.0
    """The actor's topology freezes at this fraction of the critics' freezing step (its drop
    fraction anneals to 0 by then with --decay cosine)."""
    decay: Annotated[Decay | None, DEFAULT_IN_DOCSTRING] = None
    """How the drop fraction evolves until the topology freezes (default constant; rlx2-:
    cosine)."""
    freeze_last: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Steps at the end with a frozen topology (default: 50,000, at most 5% of --steps; rlx2-:
    0, the anneal ends with the run)."""
    prune_start: float = 0.2
    """prune-: fraction of the learning steps (after warm-up) at which pruning starts."""
    prune_end: float = 0.8
    """prune-: fraction of the learning steps at which the final density is reached."""
    target_sparsity: Annotated[TargetMode | None, DEFAULT_IN_DOCSTRING] = None
    """Keep target networks sparse by magnitude pruning (the DS-TD3 release; the default), the
    online mask (rlx2-), or not."""
    sparse_kernels: KernelChoice = "auto"
    """How sparse layers are computed: by their connections only (sparse, CPU), as dense
    products of masked weights (masked), or sparse where the layer's density is at most 0.3 on
    the CPU and masked elsewhere (auto). The numbers agree up to float32 rounding."""
    buffer_size: int = 1_000_000
    """Replay capacity per agent (capped at --steps)."""
    n_step: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Multi-step TD targets: sum up to N discounted rewards before bootstrapping, cut short at
    episode ends (default 1; rlx2-: 3)."""
    n_step_start: Annotated[float | None, DEFAULT_IN_DOCSTRING] = None
    """Fraction of the learning steps trained with one-step targets before --n-step switches on
    (default 0; rlx2-: 0.1, RLx2's 300k of 3M)."""
    replay: Annotated[Literal["uniform", "dynamic"] | None, DEFAULT_IN_DOCSTRING] = None
    """uniform: keep the newest --buffer-size transitions (the default). dynamic (RLx2, the
    rlx2- default): every --buffer-check-every steps, compare the policy with the noise-free
    actions of each agent's 2,048 oldest transitions, and drop its oldest 10% while they differ
    by more than --buffer-policy-distance and it holds more than --buffer-min-size."""
    buffer_check_every: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Environment steps between the dynamic buffer's checks (default 10,000; rlx2-: scaled as
    --update-period)."""
    buffer_policy_distance: float = 0.2
    """The dynamic buffer's threshold on ½·mean((π(s) − μ)² / half-range²)."""
    buffer_min_size: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """The dynamic buffer never shrinks below this many transitions (default: a tenth of the
    replay capacity for TD3, a fifth for SAC: RLx2's floors of 1e5 and 2e5 at a 1e6 capacity)."""
    dormant_threshold: float = 0.1
    """τ of dormant neurons (ReDo): a hidden unit whose mean |activation| is at most τ times its
    layer's mean is dormant. Their share per layer is logged every --log-every steps."""
    redo_period: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Recycle dormant neurons (ReDo) every this many gradient steps: fresh incoming weights
    (at fresh random connections in a sparse layer, as many as before), zero outgoing weights,
    zero Adam moments. Default: never."""
    checkpoint_every: int = 50_000
    """Write checkpoint.pt every this many steps (and at the end, and on Ctrl-C)."""
    log_every: int = 1_000
    """Steps between rows of train_metrics.csv."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, ..."""
    threads: int = 1
    """Torch CPU threads (1 is fastest for these small networks). With one agent, more threads
    split its matrix products and so change float rounding: what it learns is not bit-identical
    to a run with 1."""
    vector_env: Literal["sync", "async"] = "sync"
    """Step the agents' environments one after another in this process (sync), or in worker
    processes, each stepping a block of them (async; observations through shared memory), which
    pays once environment steps cost more than the exchange with the workers: many agents,
    many cores, slow environments. Results are identical."""
    env_workers: Annotated[int | None, DEFAULT_IN_DOCSTRING] = None
    """Worker processes for --vector-env async (default: one per CPU core but one, at most one
    per agent); each steps a block of the agents' environments. Evaluation's environments have
    as many workers of their own, idle while training runs."""
    overlap: bool = False
    """Queue each update before stepping the environments, so that they step while it runs (on
    a GPU, or in --vector-env async's workers). The update of step t then samples transitions
    1..t-1 instead of 1..t: the newest transition joins the replay one update later. Off by
    default, so a run follows the DS-TD3 release's loop exactly."""
    cuda_graph: bool = False
    """Replay each kind of gradient step, and acting, from CUDA graphs (--device cuda): one
    launch instead of hundreds per update. The first updates, and the periodic part of every
    update (topology updates, ReDo), run eagerly. Equal to eager updates bit for bit in the CPU
    emulation of capture (tests/test_graphs.py); not yet run on a GPU."""
    tf32: bool = False
    """Let CUDA matrix products round float32 inputs to TensorFloat-32 (10 mantissa bits):
    faster on Ampere and newer GPUs, less precise (--device cuda)."""
    resume: bool = False
    """Continue the run in --out from its checkpoint (its saved configuration is used)."""
    auto_resume: bool = False
    """Continue the run in --out if it holds a checkpoint, else start it: one command for a job
    and all its requeues."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    td3: TD3Config = field(default_factory=TD3Config)
    """TD3 hyperparameters."""
    sac: SACConfig = field(default_factory=SACConfig)
    """SAC hyperparameters."""

    def __post_init__(self) -> None:
        if isinstance(self.algo, tuple | list):  # one name stays a name; several, a tuple
            if not self.algo:
                raise ConfigError("--algo needs at least one algorithm, e.g. --algo ds-td3")
            self.algo = self.algo[0] if len(self.algo) == 1 else tuple(self.algo)
        unknown = [a for a in self.methods if a not in typing.get_args(Algo)]
        if unknown:
            known = ", ".join(typing.get_args(Algo))
            raise ConfigError(f"--algo: unknown algorithm {unknown[0]!r}; choose from {known}")
        if isinstance(self.out, str | os.PathLike):
            self.out = Path(self.out)
        _plain_numbers(self)
        _check_fields(self)  # before defaults are derived from them
        self.resolve_defaults()

    def resolve_defaults(self) -> None:
        """Fill every option left at None with its default for this algorithm: the family's
        warm-up and drop fraction, and for rlx2- RLx2's recipe scaled to the run length."""
        start_steps, drop_fraction = FAMILY_DEFAULTS[self.family]
        if self.start_steps is None:
            self.start_steps = start_steps
        defaults = dict(METHOD_DEFAULTS, drop_fraction=drop_fraction)
        if self.methods[0].startswith("rlx2-"):
            tenths = round(10 * self.learning_steps / RLX2_LEARNING_STEPS)
            period = min(max(tenths, 1), 10) * (RLX2_PERIOD // 10)
            defaults.update(
                grow="gradient",
                drop_fraction=0.5,
                update_period=period,
                decay="cosine",
                freeze_last=0,
                target_sparsity="online-mask",
                n_step=3,
                n_step_start=0.1,
                replay="dynamic",
                buffer_check_every=period,
            )
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.drop_score is None:  # each growth rule with its own paper's drop
            self.drop_score = "magnitude" if self.grow == "gradient" else "signed"
        if self.actor_update_period is None:
            delay = self.td3.policy_delay if self.methods[0] == "rlx2-td3" else 1
            self.actor_update_period = self.update_period * delay
        if self.buffer_min_size is None:
            share = 0.2 if self.family == "sac" else 0.1
            self.buffer_min_size = int(share * min(self.buffer_size, self.steps))

    # ---- derived ------------------------------------------------------------------------
    @property
    def methods(self) -> tuple[str, ...]:
        """The algorithms of the population, in member order."""
        return self.algo if isinstance(self.algo, tuple) else (self.algo,)

    @property
    def members(self) -> int:
        """Agents in the population: --seeds of each algorithm."""
        return len(self.methods) * self.seeds

    @property
    def family(self) -> str:
        """td3 or sac."""
        return family_of(self.methods[0])

    @property
    def topology(self) -> str:
        """dense, static, set or prune; of a mixed population the most dynamic of its
        members' (their own are ``topologies``)."""
        kinds = {topology_of(algo) for algo in self.methods}
        return next(kind for kind in ("prune", "set", "static", "dense") if kind in kinds)

    @property
    def topologies(self) -> tuple[str, ...]:
        """Each agent's topology kind, in member order."""
        return tuple(topology_of(algo) for algo in self.methods for _ in range(self.seeds))

    @property
    def agent(self) -> TD3Config | SACConfig:
        """The hyperparameters of this run's algorithm family."""
        return self.sac if self.family == "sac" else self.td3

    @property
    def learning_steps(self) -> int:
        return max(self.steps - self.start_steps, 0)

    def default_lambdas(self) -> tuple[float, ...]:
        if self.family == "sac":
            return SAC_LAMBDAS.get(self.env.split("-")[0], DEFAULT_LAMBDAS)
        return DEFAULT_LAMBDAS

    def nm_pattern(self) -> tuple[int, int] | None:
        if self.nm is None:
            return None
        try:
            n, m = (int(x) for x in self.nm.split(":"))
        except ValueError as error:
            raise ConfigError(f"--nm takes N:M, for example 2:4; got {self.nm!r}") from error
        if not 0 < n < m:
            raise ConfigError(f"--nm {self.nm}: N:M needs 0 < N < M")
        return n, m

    @property
    def run_dir(self) -> Path:
        return self.out or Path("runs") / f"{self.env}-{'+'.join(self.methods)}-s{self.seed}"

    @property
    def frozen_steps(self) -> int:
        if self.freeze_last is not None:
            return self.freeze_last
        return min(50_000, self.steps // 20)

    def recycling(self) -> Recycling | None:
        """Dormant-neuron recycling, if --redo-period asks for it."""
        if self.redo_period is None:
            return None
        from dstrl.dormant import Recycling

        return Recycling(self.redo_period, self.dormant_threshold)

    def sparsity(self, net: Literal["critic", "actor"] = "critic") -> SparsityConfig | None:
        """The sparse-training configuration implied by ``algo`` and the sparsity options, for
        the critics or the actor (which may have a schedule of its own)."""
        from dstrl.sparse.config import SparsityConfig

        if self.topology == "dense":
            return None
        stop = self.steps - self.frozen_steps - self.start_steps
        period = self.update_period
        prune_start, prune_end = self._prune_steps()
        if self.topology == "prune":
            stop = prune_end + 1
        elif net == "actor":
            period, stop = self.actor_update_period, int(stop * self.actor_topology_stop)
        schedule = TopologySchedule(
            update_period=period,
            drop_fraction=self.drop_fraction,
            decay=self.decay,
            stop_step=max(stop, 0),
        )
        lambdas = (
            None
            if self.density is not None
            else (self.lambdas if self.lambdas is not None else self.default_lambdas())
        )
        return SparsityConfig(
            topology=self.topology,
            lambdas=lambdas,
            density=self.density,
            distribution=self.distribution,
            sparse_output=self.sparse_output,
            dense_input=self.dense_input,
            drop_score=self.drop_score,
            grow=self.grow,
            schedule=schedule,
            target=self.target_sparsity,
            # The default λ fit the MuJoCo tasks; on a tiny input layer they may exceed density 1,
            # which the ER formula caps. λ typed by the user are checked instead.
            cap_lambdas=self.lambdas is None,
            nm=self.nm_pattern(),
            prune_start=prune_start,
            prune_end=prune_end,
            kernels=self.sparse_kernels,
        )

    def dense_note(self, networks: list[list[tuple[int, int]]]) -> str:
        """Why no layer of these networks (their (n_in, n_out) shapes) came out sparse, and which
        setting would make some sparse: for a note when a sparse method trains dense networks."""
        sparsity = self.sparsity()
        assert sparsity is not None
        if self.nm is not None:
            m = self.nm_pattern()[1]
            return (
                f"--nm {self.nm} keeps every layer dense here (no sparse layer's fan-in is a "
                f"multiple of {m}); choose another M, or --density D < 1"
            )
        if self.density is not None:
            return f"--density {self.density:g} keeps every layer dense; give a density below 1"
        slots = ("input", "hidden", "output")
        limits: dict[str, float] = {}
        for shapes in networks:
            last = len(shapes) - 1
            for i in sparsity.sparse_layer_indices(len(shapes)):
                slot = slots[0] if i == 0 else slots[2] if i == last else slots[1]
                limit = er_lambda_limit(*shapes[i])
                limits[slot] = min(limits.get(slot, limit), limit)
        lambdas = " ".join(f"{lam:g}" for lam in self.lambdas or self.default_lambdas())
        below = " and ".join(f"{limits[s]:.3g} ({s})" for s in slots if s in limits)
        return (
            f"the ER λ {lambdas} give every layer of these networks density 1 (hidden sizes "
            f"{' '.join(map(str, self.agent.hidden_sizes))}), so {' '.join(self.methods)} "
            "trains dense "
            f"networks here; --lambdas below {below}, or --density D < 1, would make them sparse"
        )

    def _prune_steps(self) -> tuple[int, int]:
        """Pruning's first and last gradient step, on the topology-update grid and within the
        run (rounded past its last step, pruning never reached its final density)."""
        period = self.update_period
        start = round(self.prune_start * self.learning_steps / period) * period
        end = min(
            round(self.prune_end * self.learning_steps / period), self.learning_steps // period
        )
        return start, end * period

    def validate(self) -> None:
        """Raise ConfigError for anything a user can fix before a run starts."""
        # again: a field set after construction skipped the constructor's checks and defaults
        if isinstance(self.out, str | os.PathLike):
            self.out = Path(self.out)
        _plain_numbers(self)
        _check_fields(self)
        self.resolve_defaults()  # a field set to None after construction: its default
        self._validate_population()
        self._validate_counts()
        self._validate_devices()
        self._validate_sparsity()
        self._validate_topology()
        self._validate_replay()
        self._validate_agent()

    def _validate_counts(self) -> None:
        """Steps, seeds, periods and sizes."""
        agent = self.agent
        positive = {
            "steps": self.steps,
            "seeds": self.seeds,
            "eval-every": self.eval_every,
            "eval-episodes": self.eval_episodes,
            "update-period": self.update_period,
            "buffer-size": self.buffer_size,
            "checkpoint-every": self.checkpoint_every,
            "log-every": self.log_every,
            "threads": self.threads,
            f"{self.family}.batch-size": agent.batch_size,
        }
        if isinstance(agent, TD3Config):
            positive["td3.policy-delay"] = agent.policy_delay
        else:
            positive["sac.target-update-interval"] = agent.target_update_interval
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name} must be a positive integer, got {value}")
        check_seeds(self.seed, self.seeds)
        if self.start_steps < 0:
            raise ConfigError(f"--start-steps must be ≥ 0, got {self.start_steps}")
        if self.env_workers is not None and self.env_workers < 1:
            raise ConfigError(f"--env-workers must be a positive integer, got {self.env_workers}")

    def _validate_devices(self) -> None:
        """What needs a GPU, the CPU, or a warm-up to overlap with."""
        if self.overlap and self.start_steps == 0:
            raise ConfigError(
                "--overlap's first update samples the steps before it: give --start-steps ≥ 1"
            )
        for flag, wanted in (("--cuda-graph", self.cuda_graph), ("--tf32", self.tf32)):
            if wanted and not self.device.startswith("cuda"):
                raise ConfigError(f"{flag} needs --device cuda, not --device {self.device}")
        if self.sparse_kernels == "sparse" and not self.device.startswith("cpu"):
            raise ConfigError(
                f"--sparse-kernels sparse runs on the CPU only, not --device {self.device}: "
                "use auto or masked"
            )

    def _validate_sparsity(self) -> None:
        """How sparse: λ, a density or N:M, and which layers."""
        if self.density is not None and self.lambdas is not None:
            raise ConfigError("give either --density or --lambdas, not both")
        if self.nm is not None and (self.density is not None or self.lambdas is not None):
            raise ConfigError("--nm fixes each layer's density at N/M; drop --density/--lambdas")
        self.nm_pattern()
        if self.dense_input and self.density is None and self.nm is None:
            raise ConfigError("--dense-input needs --density or --nm (λ set the input layer too)")
        if self.nm is not None and self.topology == "prune":
            raise ConfigError("--nm cannot be combined with gradual pruning (prune-*)")
        if self.density is not None and not 0 < self.density <= 1:
            raise ConfigError(f"--density must be in (0, 1], got {self.density}")
        if self.lambdas is not None and any(lam <= 0 for lam in self.lambdas):
            raise ConfigError(f"--lambdas must be positive, got {list(self.lambdas)}")
        wanted = 3 if self.sparse_output else 2
        sparse = any(topology != "dense" for topology in self.topologies)
        if sparse and self.lambdas is not None and len(self.lambdas) != wanted:
            layers = "input, hidden, output" if self.sparse_output else "input, hidden"
            raise ConfigError(
                f"--lambdas takes {wanted} values ({layers}), got {len(self.lambdas)}"
            )

    def _validate_topology(self) -> None:
        """How the topology changes: drop, growth, freezing, pruning's schedule, recycling."""
        agent = self.agent
        if not 0 < self.drop_fraction < 1:
            raise ConfigError(f"--drop-fraction must be in (0, 1), got {self.drop_fraction}")
        if self.freeze_last is not None and self.freeze_last < 0:
            raise ConfigError(f"--freeze-last must be ≥ 0, got {self.freeze_last}")
        if self.actor_update_period < 1:
            raise ConfigError(
                f"--actor-update-period must be a positive integer, got {self.actor_update_period}"
            )
        if (
            self.topology == "set"
            and self.freeze_last is not None
            and 0 < self.learning_steps <= self.freeze_last  # no learning at all: a note
        ):
            raise ConfigError(
                f"--freeze-last {self.frozen_steps} leaves no learning step before the topology "
                f"freezes (--steps {self.steps}, --start-steps {self.start_steps}); lower it"
            )
        if self.topology == "prune":
            if not 0 <= self.prune_start < self.prune_end <= 1:
                raise ConfigError(
                    f"--prune-start and --prune-end must satisfy 0 ≤ start < end ≤ 1, got "
                    f"{self.prune_start} and {self.prune_end}"
                )
            start, end = self._prune_steps()
            if end <= start:
                raise ConfigError(
                    f"pruning from step {start} to {end} (of {self.learning_steps} learning "
                    f"steps, every --update-period {self.update_period}) has no room: train "
                    f"longer or lower --update-period"
                )
        if not 0 < self.actor_topology_stop <= 1:
            raise ConfigError(
                f"--actor-topology-stop must be in (0, 1], got {self.actor_topology_stop}"
            )
        if self.redo_period is not None and self.redo_period < 1:
            raise ConfigError(f"--redo-period must be a positive integer, got {self.redo_period}")
        if not 0 <= self.dormant_threshold < 1:
            raise ConfigError(
                f"--dormant-threshold must be in [0, 1), got {self.dormant_threshold}"
            )
        delay = agent.policy_delay if isinstance(agent, TD3Config) else 1
        if self.topology == "set" and self.grow == "gradient" and self.actor_update_period % delay:
            raise ConfigError(
                f"--grow gradient needs the actor's gradient at topology updates: make "
                f"--actor-update-period ({self.actor_update_period}; default --update-period) a "
                f"multiple of --td3.policy-delay ({delay})"
            )

    def _validate_replay(self) -> None:
        """Multi-step targets and the dynamic buffer."""
        if self.n_step < 1:
            raise ConfigError(f"--n-step must be a positive integer, got {self.n_step}")
        if not 0 <= self.n_step_start <= 1:
            raise ConfigError(f"--n-step-start must be in [0, 1], got {self.n_step_start}")
        capacity = min(self.buffer_size, self.steps)  # the replay's, per agent
        if self.n_step > capacity:  # each update gathers n_step rows per transition
            raise ConfigError(
                f"--n-step {self.n_step:,} exceeds the replay's capacity of {capacity:,} "
                "transitions (--buffer-size, at most --steps)"
            )
        if self.buffer_check_every < 1:
            raise ConfigError(
                f"--buffer-check-every must be a positive integer, got {self.buffer_check_every}"
            )
        if self.buffer_min_size < 0 or self.buffer_policy_distance <= 0:
            raise ConfigError(
                "--buffer-min-size must be ≥ 0 and --buffer-policy-distance positive, got "
                f"{self.buffer_min_size} and {self.buffer_policy_distance}"
            )

    def _validate_agent(self) -> None:
        """The family's hyperparameters (--td3.*, --sac.*)."""
        prefix, agent = f"--{self.family}.", self.agent
        nonnegative = ["weight_decay"]
        if isinstance(agent, TD3Config):
            nonnegative += ["policy_noise", "noise_clip", "exploration_noise"]
        else:
            nonnegative += ["alpha"]
        for name in nonnegative:
            if getattr(agent, name) < 0:
                flag = prefix + name.replace("_", "-")
                raise ConfigError(f"{flag} must be ≥ 0, got {getattr(agent, name)}")
        if isinstance(agent, SACConfig) and agent.alpha == 0 and agent.autotune:
            raise ConfigError("--sac.autotune tunes log α: start from --sac.alpha > 0")
        if not 0 < agent.tau <= 1:
            raise ConfigError(f"{prefix}tau must be in (0, 1], got {agent.tau}")
        if not 0 <= agent.gamma <= 1:
            raise ConfigError(f"{prefix}gamma must be in [0, 1], got {agent.gamma}")
        if agent.learning_rate <= 0:
            raise ConfigError(f"{prefix}learning-rate must be positive, got {agent.learning_rate}")
        if any(width < 1 for width in agent.hidden_sizes) or not agent.hidden_sizes:
            raise ConfigError(f"{prefix}hidden-sizes must be one or more positive widths")

    def notes(self, given: set[str]) -> list[str]:
        """What a user should hear before the run starts: the options named on the command line
        (``given``, as ``td3.batch_size``) that this configuration never reads, and a random
        warm-up as long as the run. Not errors: a sweep gives every run the same options, TD3's
        and SAC's alike, and a random policy's returns can be wanted."""
        notes = [
            f"--{name.replace('_', '-')} does nothing {self._unread_because(name)}"
            for name in sorted(given & unread_settings(flat_settings(self.to_json())))
        ]
        if "env_workers" in given and self.vector_env != "async":
            notes.append("--env-workers does nothing without --vector-env async")
        if self.start_steps >= self.steps:
            notes.append(
                f"--start-steps is {self.start_steps:,} and --steps {self.steps:,}: every action "
                "is random and the agents never learn (lower --start-steps)"
            )
        else:
            notes += self._never_due()
        capacity = min(self.buffer_size, self.steps)
        if self.agent.batch_size > capacity:
            notes.append(
                f"--{self.family}.batch-size {self.agent.batch_size:,} exceeds the replay's "
                f"capacity of {capacity:,}: every batch repeats transitions"
            )
        return notes

    def _never_due(self) -> list[str]:
        """What a period longer than the learning steps never does: the method trains as another
        one (a ds-td3 whose topology never changes is static-td3) under its name."""
        learning, agent, never = self.learning_steps, self.agent, []
        stop = self.steps - self.frozen_steps - self.start_steps  # the topology freezes
        if "set" in self.topologies and self.update_period >= stop:
            never.append(
                f"--update-period {self.update_period:,}: the topology freezes after "
                f"{max(stop, 0):,} learning steps, before its first update, so it never "
                "changes (lower --update-period or --freeze-last)"
            )
        if isinstance(agent, TD3Config) and agent.policy_delay > learning:
            never.append(
                f"--td3.policy-delay {agent.policy_delay:,} is longer than the {learning:,} "
                "learning steps: the actor never trains"
            )
        if isinstance(agent, SACConfig) and agent.target_update_interval > learning:
            never.append(
                f"--sac.target-update-interval {agent.target_update_interval:,} is longer than "
                f"the {learning:,} learning steps: the target critics never change"
            )
        if self.redo_period is not None and self.redo_period > learning:
            never.append(
                f"--redo-period {self.redo_period:,} is longer than the {learning:,} learning "
                "steps: no unit is ever recycled"
            )
        every = self.buffer_check_every  # at the environment steps it divides, once learning
        if self.replay == "dynamic" and self.steps // every * every < self.start_steps:
            never.append(
                f"--buffer-check-every {every:,}: no step from --start-steps "
                f"{self.start_steps:,} to --steps {self.steps:,} is a multiple of it, so the "
                "dynamic buffer never shrinks"
            )
        return never

    def _unread_because(self, name: str) -> str:
        """Why this configuration never reads the setting ``name`` (one of
        ``unread_settings``)."""
        algo = " ".join(self.methods)
        if name.split(".")[0] in ("td3", "sac"):
            return f"for {self.family} (its options are --{self.family}.*)"
        if name == "distribution" and self.density is None:
            return "without --density (it spreads --density; λ is used)"
        if name == "n_step_start":
            return "with one-step targets (--n-step 1)"
        if name.startswith("buffer_"):
            return "without --replay dynamic"
        if name in PRUNING:
            return f"for {algo}: only prune-{self.family} prunes gradually"
        if self.topology == "dense":
            return f"for {algo}, whose networks are dense (sparse: static-{self.family}, ...)"
        if self.topology == "static":
            return f"for {algo}, whose topology never changes"
        return f"for {algo}: gradual pruning never drops and grows (--update-period paces it)"

    def _validate_population(self) -> None:
        methods = self.methods
        if len(methods) == 1:
            return
        if len(set(methods)) < len(methods):
            raise ConfigError(f"--algo names an algorithm twice: {' '.join(methods)}")
        families = {family_of(algo) for algo in methods}
        if len(families) > 1:
            raise ConfigError(
                f"--algo {' '.join(methods)} mixes the {' and '.join(sorted(families))} families; "
                "one population trains one family: run them apart"
            )
        apart = [algo for algo in methods if runs_apart(algo)]
        if apart:
            raise ConfigError(
                f"{' '.join(apart)} cannot share a population with other algorithms (own "
                "schedules); run it apart"
            )

    # ---- persistence --------------------------------------------------------------------
    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["out"] = str(self.run_dir)
        return data

    @classmethod
    def load(cls, run_dir: Path | str) -> TrainConfig:
        """The configuration saved in ``run_dir/config.json``, with ``out`` at ``run_dir``: a
        run copied or moved elsewhere is that run (its saved ``out`` was where it trained
        first, and a resume of the copy trained the original); ``resume`` and ``auto_resume``
        are off, whatever the last start said (a run resumed once came back with resume=True,
        and auto_resume=True on it was refused as both)."""
        if not isinstance(run_dir, str | os.PathLike):
            raise TypeError(f"TrainConfig.load takes a run directory, not {run_dir!r}")
        run_dir = Path(run_dir)
        path = run_dir / "config.json"
        if not path.exists():
            if any((run_dir / name).exists() for name in ("checkpoint.pt", "summary.json")):
                raise ConfigError(
                    f"{run_dir} holds a run but no config.json (deleted?): put it back, or "
                    f"delete {run_dir} to train the run afresh"
                )
            raise ConfigError(f"{run_dir} is not a dstrl run directory (no config.json)")
        try:
            saved = json.loads(path.read_text())
            return cls.from_json(
                {**saved, "out": str(run_dir), "resume": False, "auto_resume": False}
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            why = f"it has no {error.args[0]!r}" if isinstance(error, KeyError) else str(error)
            raise ConfigError(
                f"{path} is not a valid dstrl configuration ({why}): put back the run's own, or "
                f"delete {run_dir} to train the run afresh"
            ) from error

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        data = dict(data)
        agents = {}
        for name, kind in (("td3", TD3Config), ("sac", SACConfig)):
            if name in data:
                settings = dict(data.pop(name))
                settings["hidden_sizes"] = tuple(settings["hidden_sizes"])
                agents[name] = kind(**settings)
        if data.get("lambdas") is not None:
            data["lambdas"] = tuple(data["lambdas"])
        data["out"] = Path(data["out"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"config.json has unknown fields {sorted(unknown)}")
        return cls(**data, **agents)  # its fields' types checked (a hand edit, say)
