"""``prune_to_count`` for CPU tensors, compiled with Numba: two or three passes over a layer.

The tensor version in ``dstrl.sparse.target`` needs six full passes and about thirty small
operations per layer; on a CPU each operation's dispatch costs as much as the arithmetic of a
small layer, and the target is cold in cache by the time it runs. Here one pass finds each
row's strongest challenger and weakest connection; only when the first beats the second does a
second pass collect the few candidates (challengers above the weakest connection, connections
below the strongest challenger), and the merge runs on those. The result is identical: both
keep per row the largest magnitudes of connections and challengers, as many as it had.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# min/max reductions are exact under reassociation; weights are never NaN or infinite
_FAST = {"nnan", "ninf", "nsz", "reassoc"}


@njit(cache=True, nogil=True, fastmath=_FAST)
def _extremes(t, o):
    """Strongest challenger |θ'| (0 if none) and weakest connection |θ'| of one row."""
    strongest = np.float32(0.0)
    weakest = np.float32(np.inf)
    for j in range(t.shape[0]):
        v = abs(t[j])
        strongest = max(strongest, v if o[j] != 0.0 else np.float32(0.0))
        weakest = min(weakest, v if o[j] == 0.0 else np.float32(np.inf))
    return strongest, weakest


@njit(cache=True, nogil=True, fastmath=_FAST)
def _zero_outside(t, o):
    for j in range(t.shape[0]):
        t[j] = t[j] if o[j] == 0.0 else np.float32(0.0)


@njit(cache=True, nogil=True)
def _smallest(values, k):
    """Indices of the ``k`` smallest ``values``, in ascending order of value."""
    if k < values.shape[0]:
        bound = np.partition(values, k - 1)[k - 1]
        keep = np.nonzero(values <= bound)[0]
        return keep[np.argsort(values[keep])[:k]]
    return np.argsort(values)


@njit(cache=True, nogil=True)
def prune_rows(target, outside):
    """``prune_to_count`` on (rows, n) float32 arrays, in place; True if any challenger had
    entered (a nonzero entry outside the connections)."""
    rows, n = target.shape
    entered = False
    found = np.empty(n, np.int64)
    for r in range(rows):
        t = target[r]
        o = outside[r]
        strongest, weakest = _extremes(t, o)
        if strongest == 0.0:
            continue
        entered = True
        if strongest > weakest:
            # candidates, by a branch-free compaction: only these can take part in a swap
            count = 0
            for j in range(n):
                v = abs(t[j])
                out = o[j] != 0.0
                found[count] = j
                count += (out & (v > weakest)) | ((not out) & (v < strongest))
            challengers = 0
            for i in range(count):
                challengers += o[found[i]] != 0.0
            c_val = np.empty(challengers, np.float32)  # negated: ascending = strongest first
            c_idx = np.empty(challengers, np.int64)
            w_val = np.empty(count - challengers, np.float32)
            w_idx = np.empty(count - challengers, np.int64)
            a = 0
            b = 0
            for i in range(count):
                j = found[i]
                if o[j] != 0.0:
                    c_val[a] = -abs(t[j])
                    c_idx[a] = j
                    a += 1
                else:
                    w_val[b] = abs(t[j])
                    w_idx[b] = j
                    b += 1
            k = min(a, b)
            c_order = _smallest(c_val, k)
            w_order = _smallest(w_val, k)
            # the j-th strongest challenger replaces the j-th weakest connection while stronger
            s = 0
            while s < k and -c_val[c_order[s]] > w_val[w_order[s]]:
                o[c_idx[c_order[s]]] = 0.0
                o[w_idx[w_order[s]]] = 1.0
                s += 1
        _zero_outside(t, o)
    return entered
