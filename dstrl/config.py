"""The training configuration: one dataclass, one documented field per command-line option."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dstrl.agents.td3 import TD3Config
from dstrl.sparse.config import SparsityConfig
from dstrl.sparse.schedule import TopologySchedule

Algo = Literal["td3", "static-td3", "ds-td3"]
ALGOS: tuple[str, ...] = ("td3", "static-td3", "ds-td3")
DEFAULT_LAMBDAS = (7.0, 64.0)


class ConfigError(ValueError):
    """A configuration the user can fix: the message says what is wrong and what to do."""


@dataclass
class TrainConfig:
    """Train ``seeds`` independent agents in lockstep and write a run directory."""

    algo: Algo = "ds-td3"
    """td3: dense (sparsity options are ignored); static-td3: sparse, fixed ER topology;
    ds-td3: sparse, SET prune-and-grow."""
    env: str = "HalfCheetah-v5"
    """Gymnasium environment id (continuous Box actions)."""
    steps: int = 1_000_000
    """Environment steps per agent."""
    seeds: int = 1
    """Number of independent agents trained together (own seed, env, buffer, masks)."""
    seed: int = 0
    """Seed of the first agent; agent i uses seed + i."""
    out: Path | None = None
    """Run directory (default: runs/<env>-<algo>-s<seed>)."""
    start_steps: int = 25_000
    """Uniformly random actions before learning starts."""
    eval_every: int = 5_000
    """Evaluate the deterministic policy every this many steps."""
    eval_episodes: int = 10
    """Episodes per evaluation, on separate evaluation environments."""
    density: float | None = None
    """Overall density of the sparse layers, spread over them as Erdős–Rényi (instead of λ)."""
    distribution: Literal["er", "uniform"] = "er"
    """How --density is spread over the sparse layers: Erdős–Rényi (ERK) or uniformly."""
    lambdas: tuple[float, ...] | None = None
    """ER λ of the input and hidden layers (plus output with --sparse-output); default 7 64."""
    sparse_output: bool = False
    """Make the output layer sparse too (the paper keeps it dense)."""
    drop_fraction: float = 0.05
    """Fraction η of each layer's connections replaced per topology update."""
    drop_score: Literal["signed", "magnitude"] = "signed"
    """Drop by sign-separated weight (as the release) or by |w|."""
    grow: Literal["random", "gradient"] = "random"
    """Grow new connections at random (SET, the paper) or where the dense gradient is largest
    (RigL; the dense gradient is taken at topology-update steps only)."""
    update_period: int = 1_000
    """Gradient steps between topology updates (e)."""
    decay: Literal["constant", "cosine"] = "constant"
    """How the drop fraction evolves until the topology freezes."""
    freeze_last: int | None = None
    """Steps at the end with a frozen topology (default: 50,000, at most 5% of --steps)."""
    target_sparsity: Literal["magnitude", "online-mask", "dense"] = "magnitude"
    """Keep target networks sparse by magnitude pruning (the release), the online mask, or not."""
    buffer_size: int = 1_000_000
    """Replay capacity per agent (capped at --steps)."""
    checkpoint_every: int = 50_000
    """Write checkpoint.pt every this many steps (and at the end, and on Ctrl-C)."""
    log_every: int = 1_000
    """Steps between rows of train_metrics.csv."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:1, ..."""
    threads: int = 1
    """Torch CPU threads (1 is fastest for these small networks)."""
    resume: bool = False
    """Continue the run in --out from its checkpoint (its saved configuration is used)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    td3: TD3Config = field(default_factory=TD3Config)
    """TD3 hyperparameters."""

    # ---- derived ------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.out or Path("runs") / f"{self.env}-{self.algo}-s{self.seed}"

    @property
    def frozen_steps(self) -> int:
        if self.freeze_last is not None:
            return self.freeze_last
        return min(50_000, self.steps // 20)

    def sparsity(self) -> SparsityConfig | None:
        """The sparse-training configuration implied by ``algo`` and the sparsity options."""
        if self.algo == "td3":
            return None
        stop = self.steps - self.frozen_steps - self.start_steps
        schedule = TopologySchedule(
            update_period=self.update_period,
            drop_fraction=self.drop_fraction,
            decay=self.decay,
            stop_step=max(stop, 0),
        )
        lambdas = None if self.density is not None else (self.lambdas or DEFAULT_LAMBDAS)
        return SparsityConfig(
            topology="set" if self.algo == "ds-td3" else "static",
            lambdas=lambdas,
            density=self.density,
            distribution=self.distribution,
            sparse_output=self.sparse_output,
            drop_score=self.drop_score,
            grow=self.grow,
            schedule=schedule,
            target=self.target_sparsity,
            # The default λ fit the MuJoCo tasks; on a tiny input layer they may exceed density 1,
            # which the ER formula caps. λ typed by the user are checked instead.
            cap_lambdas=self.lambdas is None,
        )

    def validate(self) -> None:
        """Raise ConfigError for anything a user can fix before a run starts."""
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
            "td3.batch-size": self.td3.batch_size,
            "td3.policy-delay": self.td3.policy_delay,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name} must be a positive integer, got {value}")
        if self.start_steps < 0:
            raise ConfigError(f"--start-steps must be ≥ 0, got {self.start_steps}")
        if self.density is not None and self.lambdas is not None:
            raise ConfigError("give either --density or --lambdas, not both")
        if self.density is not None and not 0 < self.density <= 1:
            raise ConfigError(f"--density must be in (0, 1], got {self.density}")
        if self.lambdas is not None and any(lam <= 0 for lam in self.lambdas):
            raise ConfigError(f"--lambdas must be positive, got {list(self.lambdas)}")
        if not 0 < self.drop_fraction < 1:
            raise ConfigError(f"--drop-fraction must be in (0, 1), got {self.drop_fraction}")
        if self.freeze_last is not None and self.freeze_last < 0:
            raise ConfigError(f"--freeze-last must be ≥ 0, got {self.freeze_last}")
        for name in ("policy_noise", "noise_clip", "exploration_noise", "weight_decay"):
            if getattr(self.td3, name) < 0:
                flag = "--td3." + name.replace("_", "-")
                raise ConfigError(f"{flag} must be ≥ 0, got {getattr(self.td3, name)}")
        learning = self.steps - self.start_steps
        if self.algo == "ds-td3" and self.freeze_last is not None and learning <= self.freeze_last:
            raise ConfigError(
                f"--freeze-last {self.frozen_steps} leaves no learning step before the topology "
                f"freezes (--steps {self.steps}, --start-steps {self.start_steps}); lower it"
            )
        if self.grow == "gradient" and self.update_period % self.td3.policy_delay:
            raise ConfigError(
                f"--grow gradient needs the actor's gradient at topology updates: make "
                f"--update-period ({self.update_period}) a multiple of --td3.policy-delay "
                f"({self.td3.policy_delay})"
            )
        if not 0 < self.td3.tau <= 1:
            raise ConfigError(f"--td3.tau must be in (0, 1], got {self.td3.tau}")
        if not 0 <= self.td3.gamma <= 1:
            raise ConfigError(f"--td3.gamma must be in [0, 1], got {self.td3.gamma}")
        if self.td3.learning_rate <= 0:
            raise ConfigError(f"--td3.learning-rate must be positive, got {self.td3.learning_rate}")
        if any(width < 1 for width in self.td3.hidden_sizes) or not self.td3.hidden_sizes:
            raise ConfigError("--td3.hidden-sizes must be one or more positive widths")

    # ---- persistence --------------------------------------------------------------------
    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["out"] = str(self.run_dir)
        return data

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        data = dict(data)
        td3 = dict(data.pop("td3"))
        td3["hidden_sizes"] = tuple(td3["hidden_sizes"])
        if data.get("lambdas") is not None:
            data["lambdas"] = tuple(data["lambdas"])
        data["out"] = Path(data["out"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"config.json has unknown fields {sorted(unknown)}")
        return cls(**data, td3=TD3Config(**td3))
