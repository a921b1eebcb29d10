"""The dynamic-sparse-training core: masks (ER, N:M), distributions, topology rules (SET, RigL,
gradual pruning), schedules, target sparsity, accounting.

Pure PyTorch; nothing here knows about reinforcement learning. Every tensor has leading
"member" dimensions (independent networks trained side by side); every operation is vectorised
over them.
"""

from dstrl.lazy import exports

# each name's module, imported when the name is first used: the configuration imports
# dstrl.sparse.kinds and dstrl.sparse.schedule without torch
__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "LayerShape": "accounting",
        "forward_flops": "accounting",
        "training_flops": "accounting",
        "er_densities_for_global": "distributions",
        "er_densities_from_lambdas": "distributions",
        "er_density": "distributions",
        "MaskedLayers": "engine",
        "nm_mask": "masks",
        "random_mask": "masks",
        "GradualPruning": "pruning",
        "TopologySchedule": "schedule",
        "TARGET_MODES": "kinds",
        "SparseTarget": "target",
        "SET": "topology",
        "RigL": "topology",
        "prune_and_grow": "topology",
    },
)
