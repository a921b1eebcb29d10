"""Trained policies on their own: ``dstrl export`` writes a run's actors to one safetensors
file, and ``load_policy`` turns that file back into a function from observations to actions,
with no replay buffer, optimiser, critic or environment code.

The file holds, per actor layer i, ``weight.i`` (members, n_out, n_in), ``bias.i`` (members,
n_out) and, for sparse layers, the boolean ``mask.i`` (the weights are already zero outside it;
the masks are there for analysis and for sparse inference); the action bounds; and, as metadata,
the format, the environment id, the algorithm, the seeds, the step and the run's configuration.
safetensors stores raw arrays and a JSON header only, so loading one cannot execute code.

A policy computes every layer as a dense product of its (masked) weights: it acts exactly as the
trained agents do when they ran masked-dense, and within float32 rounding when some of their
layers were computed by their connections (``--sparse-kernels``).
"""

from __future__ import annotations

import hashlib
import json
import numbers
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dstrl.errors import PolicyError
from dstrl.nets import mlp

FORMAT = "dstrl-policy/1"
HEADER_LIMIT = 100_000_000  # safetensors' own bound on a header


class Policy:
    """Deterministic actions of one or more trained actors (a population's members).

    ``policy(obs)`` maps observations (..., obs_dim) to actions (..., act_dim) for a single
    member; for several members, the leading axis of ``obs`` is the member. ``member(i)`` picks
    one.
    """

    def __init__(
        self,
        weights: list[Tensor],
        biases: list[Tensor],
        masks: dict[int, Tensor],
        action_low: Tensor,
        action_high: Tensor,
        head: str,
        metadata: dict,
    ) -> None:
        self.weights, self.biases, self.masks = weights, biases, masks
        self.action_low, self.action_high = action_low, action_high
        self.scale, self.bias = (action_high - action_low) / 2, (action_high + action_low) / 2
        self.head = head
        self.metadata = metadata
        self.members = weights[0].shape[0]
        self.obs_dim, self.act_dim = weights[0].shape[2], action_low.numel()

    @property
    def env(self) -> str:
        return self.metadata["env"]

    @property
    def seeds(self) -> list[int]:
        return self.metadata["seeds"]

    def member(self, index: int) -> Policy:
        """The policy of member ``index`` alone (an integer, NumPy's included)."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise PolicyError(f"member must be an integer, not {index!r}")
        index = int(index)
        if not 0 <= index < self.members:
            valid = "0" if self.members == 1 else f"0 to {self.members - 1}"
            raise PolicyError(
                f"member {index} does not exist; this policy has {self.members} (give {valid})"
            )
        pick = slice(index, index + 1)
        diverged = [0] if index in self.metadata.get("diverged", []) else []
        metadata = dict(self.metadata, seeds=[self.seeds[index]], diverged=diverged)
        if "methods" in metadata:  # a mixed population: the member's own algorithm
            metadata.update(algo=metadata["methods"][index], methods=[metadata["methods"][index]])
        return Policy(
            [w[pick] for w in self.weights],
            [b[pick] for b in self.biases],
            {i: m[pick] for i, m in self.masks.items()},
            self.action_low,
            self.action_high,
            self.head,
            metadata,
        )

    def to_bytes(self) -> bytes:
        """The safetensors file ``load_policy`` reads."""
        from safetensors.torch import save

        tensors = {f"weight.{i}": w for i, w in enumerate(self.weights)}
        tensors.update({f"bias.{i}": b for i, b in enumerate(self.biases)})
        tensors.update({f"mask.{i}": m for i, m in self.masks.items()})
        tensors.update(action_low=self.action_low, action_high=self.action_high)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        metadata = json.dumps(self.metadata)
        header = {"format": FORMAT, "metadata": metadata, "sha256": _digest(tensors, metadata)}
        return save(tensors, metadata=header)

    @torch.no_grad()
    def __call__(self, obs) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        if x.dim() == 0 or x.shape[-1] != self.obs_dim:
            got = "a number" if x.dim() == 0 else x.shape[-1]
            raise PolicyError(f"observations must have {self.obs_dim} entries, got {got}")
        if self.members > 1 and (x.dim() < 2 or x.shape[0] != self.members):
            raise PolicyError(
                f"this policy holds {self.members} members: give observations shaped "
                f"({self.members}, ..., {self.obs_dim}), or pick one with .member(i)"
            )
        shape = x.shape[:-1]
        x = x.reshape(self.members, -1, self.obs_dim)
        if self.head == "tanh":  # TD3: the network's output is the squashed action
            y = mlp(x, self.weights, self.biases, tanh=True)
        else:  # SAC: the squashed mean of the Gaussian
            y = torch.tanh(mlp(x, self.weights, self.biases)[..., : self.act_dim])
        return (y * self.scale + self.bias).reshape(*shape, self.act_dim).numpy()


def load_policy(path: str | Path, member: int | None = None) -> Policy:
    """Read a file written by ``dstrl export``; ``member`` picks one agent of a population."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path} is not a file")
    try:
        with safe_open(path, "pt") as f:
            header = f.metadata() or {}
            # fresh (aligned) copies: BLAS picks its kernels by alignment, and with them its
            # rounding, so an exported policy acts to the bit as its agent did
            tensors = {name: f.get_tensor(name).clone() for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        if _written_by_export(path):  # its header is whole: the file was cut short
            raise PolicyError(
                f"{path} is a damaged dstrl policy: it is cut short ({error}); export it again"
            ) from error
        raise PolicyError(f"{path} is not a safetensors file ({error})") from error
    if header.get("format") != FORMAT:
        raise PolicyError(f"{path} is not a dstrl policy (format {header.get('format')!r})")
    try:
        metadata = json.loads(header["metadata"])
        layers = metadata["layers"]
        policy = Policy(
            [tensors[f"weight.{i}"] for i in range(layers)],
            [tensors[f"bias.{i}"] for i in range(layers)],
            {i: tensors[f"mask.{i}"] for i in range(layers) if f"mask.{i}" in tensors},
            tensors["action_low"],
            tensors["action_high"],
            metadata["head"],
            metadata,
        )
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise PolicyError(f"{path} is an incomplete dstrl policy (missing {error})") from error
    damage = _damage(policy)
    if damage is None and "sha256" in header:  # files of earlier versions carry none
        if _digest(tensors, header["metadata"]) != header["sha256"]:
            damage = "its contents no longer match their checksum"
    if damage:
        raise PolicyError(f"{path} is a damaged dstrl policy: {damage}; export it again")
    return policy if member is None else policy.member(member)


HEADS = {"tanh": 1, "squashed-gaussian-mean": 2}  # outputs per action dimension


def _digest(tensors: dict[str, Tensor], metadata: str) -> str:
    """SHA-256 of a policy's tensors (names, types, shapes and bytes) and metadata: a flipped
    bit in a weight would otherwise load without a word, as a slightly different policy."""
    digest = hashlib.sha256(metadata.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _damage(policy: Policy) -> str | None:
    """What is wrong with a policy read from a file (its header edited or corrupted), if
    anything: each field that code reads, and the layers' shapes."""
    members, meta = policy.members, policy.metadata

    def ints(value, below=None) -> bool:
        return isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) and (below is None or 0 <= v < below)
            for v in value
        )

    checks = {
        "env": isinstance(meta.get("env"), str),
        "seeds": ints(meta.get("seeds")) and len(meta["seeds"]) == members,
        "step": isinstance(meta.get("step"), int) and not isinstance(meta["step"], bool),
        "head": meta.get("head") in HEADS,
        "diverged": ints(meta.get("diverged", []), below=members),
        "algo": isinstance(meta.get("algo"), str | list),
        "methods": "methods" not in meta
        or (isinstance(meta["methods"], list) and len(meta["methods"]) == members),
    }
    bad = [name for name, fine in checks.items() if not fine]
    if bad:
        return f"its {', '.join(bad)} cannot be read"
    width = policy.obs_dim
    for i, (w, b) in enumerate(zip(policy.weights, policy.biases, strict=True)):
        if w.dim() != 3 or w.shape[0] != members or w.shape[2] != width:
            return f"layer {i}'s weights do not follow the layer before"
        if tuple(b.shape) != (members, w.shape[1]):
            return f"layer {i}'s bias does not fit its weights"
        width = w.shape[1]
    if width != HEADS[meta["head"]] * policy.act_dim or policy.action_high.shape != (
        policy.act_dim,
    ):
        return "its last layer does not fit its action bounds"
    return None


def export_policy(run_dir: Path | str, out: Path | str, member: int | None = None) -> Policy:
    """Write the actors of the run in ``run_dir`` (all members, or ``member``) to ``out``."""
    from dstrl.rundir import write_atomic
    from dstrl.train import load_trained, member_methods, member_seeds

    run_dir, out = Path(run_dir), Path(out)
    _check_out(out)
    trained = load_trained(run_dir, "cpu")  # a GPU run exports anywhere
    config, agent, step, diverged = trained.config, trained.agent, trained.step, trained.diverged
    masks = {}
    if agent.actor_sparse is not None:
        masks = dict(zip(agent.actor_sparse.indices, agent.actor_sparse.masks, strict=True))
    metadata = {
        "env": config.env,
        "algo": config.algo,
        "seeds": member_seeds(config),
        "methods": member_methods(config),
        "step": step,
        "layers": len(agent.actor.weights),
        "head": "tanh" if config.family == "td3" else "squashed-gaussian-mean",
        "diverged": diverged,
        "config": config.to_json(),
    }
    policy = Policy(
        [w.detach().cpu() for w in agent.actor.weights],
        [b.detach().cpu() for b in agent.actor.biases],
        {i: m.cpu() for i, m in masks.items()},
        agent.action_low.cpu(),
        agent.action_high.cpu(),
        metadata["head"],
        metadata,
    )
    if member is not None:
        if member in metadata["diverged"]:
            raise PolicyError(
                f"member {member} of {run_dir} diverged and was halted (summary.json says "
                "where); export another member"
            )
        policy = policy.member(member)
    if not out.parent.exists():
        out.parent.mkdir(parents=True)
    write_atomic(out, policy.to_bytes())
    return policy


def _check_out(out: Path) -> None:
    """PolicyError unless ``out`` names a file that is new or an older policy: anything else
    there (a run's checkpoint or logs, say) is not replaced."""
    if not out.name or out.is_dir():
        raise PolicyError(f"--out {out} must name a file, e.g. {out / 'policy.safetensors'}")
    if out.exists() and not _written_by_export(out):
        raise PolicyError(
            f"{out} exists and is not a dstrl policy, so it is not replaced: choose another "
            "--out, or delete it first"
        )


def _written_by_export(path: Path) -> bool:
    """Whether ``path`` is a policy file by its header, damaged or cut short or not (replaced
    by a new export, as the error that names the damage advises). The header is read as the
    format lays it out: its length in 8 bytes, then JSON; safetensors refuses a cut file."""
    try:
        with path.open("rb") as f:
            length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(min(length, HEADER_LIMIT)))
        return header["__metadata__"]["format"] == FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False
