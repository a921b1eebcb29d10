"""Gradient masks on the CPU, compiled with Numba: a select on the boolean mask.

Every update masks the dense gradient of every masked-dense layer. ``torch``'s multiply by a
0/1 float factor reads four bytes of factor per weight, and its multiply by a boolean mask takes
a slow path (five times the time); the select here reads one byte per weight. At DS-TD3's λ on
HalfCheetah sizes, one thread: 27–30 → 22 µs per update (``python benchmarks/update.py
--densities λ --multiplied-masks --updates 1000``, which times both).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def zero_inactive(gradient, mask):
    """``gradient`` (float32) becomes 0 wherever ``mask`` (bool, the same shape) is False, in
    place; both C-contiguous. A NaN or infinite gradient of an inactive weight becomes 0 too
    (a multiply by 0 would keep a NaN)."""
    g, m = gradient.reshape(-1), mask.reshape(-1)
    for j in range(g.shape[0]):
        g[j] = g[j] if m[j] else np.float32(0.0)
