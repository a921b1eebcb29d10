"""The dynamic-sparse-training core: masks (ER, N:M), distributions, topology rules (SET, RigL,
gradual pruning), schedules, target sparsity, accounting.

Pure PyTorch; nothing here knows about reinforcement learning. Every tensor has leading
"member" dimensions (independent networks trained side by side); every operation is vectorised
over them.
"""

from dstrl.sparse.accounting import LayerShape, forward_flops, training_flops
from dstrl.sparse.distributions import (
    er_densities_for_global,
    er_densities_from_lambdas,
    er_density,
)
from dstrl.sparse.engine import MaskedLayers
from dstrl.sparse.masks import nm_mask, random_mask
from dstrl.sparse.pruning import GradualPruning
from dstrl.sparse.schedule import TopologySchedule
from dstrl.sparse.target import TARGET_MODES, SparseTarget
from dstrl.sparse.topology import SET, RigL, prune_and_grow

__all__ = [
    "GradualPruning",
    "LayerShape",
    "MaskedLayers",
    "RigL",
    "SET",
    "SparseTarget",
    "TARGET_MODES",
    "TopologySchedule",
    "er_densities_for_global",
    "er_densities_from_lambdas",
    "er_density",
    "forward_flops",
    "nm_mask",
    "prune_and_grow",
    "random_mask",
    "training_flops",
]
