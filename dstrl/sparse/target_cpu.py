"""``prune_to_count`` for CPU tensors, compiled with Numba: two passes over a layer.

The tensor version in ``dstrl.sparse.target`` needs six full passes and about thirty small
operations per layer; on a CPU each operation's dispatch costs as much as the arithmetic of a
small layer, and the target is cold in cache by the time it runs. Here one pass finds, per
block of ``BLOCK`` entries, the strongest challenger and the weakest connection; when some
challenger beats some connection, the merge reads only the blocks that can take part in it; a last
pass zeroes what is outside the connections. The result is identical: both keep per row the
largest magnitudes of connections and challengers, as many as it had.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# weights are never NaN or infinite
_FAST = {"nnan", "ninf", "nsz", "reassoc"}
BLOCK = 256
"""Entries per block. The strongest challengers of a layer pruned after a topology change lie
about one to a block, so the merge reads about a block per swap, and flags a block in vector
code before it reads any entry: larger blocks make the first pass and the choice of blocks
cheaper, while the merge reads more. On the rows of ``benchmarks/prune.py`` 256 took 0.88x the
time of 128 per row and 512 0.92x (rows with over 32 swaps were slower). (When the merge read
every entry of a chosen block, 128 had been the best: 0.8x of 256.)"""


MAGNITUDE = np.uint32(0x7FFFFFFF)  # a float32's bits without its sign
INFINITY = np.uint32(0x7F800000)  # +inf's bits: above every finite magnitude's


@njit(cache=True, nogil=True)
def _block_extremes(t, o, strongest, weakest):
    """Per block of ``BLOCK`` entries: the strongest challenger |θ'| (0 if none) and the weakest
    connection |θ'| (inf if none).

    Non-negative floats order as their bits do, so both are integer reductions over the
    magnitudes' bits, which compile to vector code (the float ones did not: 8x slower)."""
    n = t.shape[0]
    bits, outside = t.view(np.uint32), o.view(np.uint8)
    strongest_bits, weakest_bits = strongest.view(np.uint32), weakest.view(np.uint32)
    for k in range(strongest.shape[0]):
        block = bits[k * BLOCK : min(n, (k + 1) * BLOCK)]  # a slice: indices never wrap
        out = outside[k * BLOCK : min(n, (k + 1) * BLOCK)]
        s, w = np.uint32(0), INFINITY
        for j in range(block.shape[0]):
            magnitude, flag = block[j] & MAGNITUDE, np.uint32(out[j])
            s = max(s, magnitude * flag)  # challengers only
            w = min(w, magnitude | (flag * INFINITY))  # connections only
        strongest_bits[k], weakest_bits[k] = s, w


@njit(cache=True, nogil=True, fastmath=_FAST)
def _zero_outside(t, o):
    for j in range(t.shape[0]):
        t[j] = np.float32(0.0) if o[j] else t[j]


@njit(cache=True, nogil=True)
def _kth(values, k, largest):
    """The k-th largest (or smallest) of ``values`` (k ≥ 1); beyond their number, the bound
    past every value: 0 for largest (magnitudes are non-negative), inf for smallest.

    Found bit by bit, from the top: the largest bit pattern with at least k values at or above
    it (or fewer than k below it) is the k-th value's. Each bit is one count over the values, in
    vector code without branches; a selection (``np.partition``) branches on the data, and its
    mispredictions cost more than the 31 counts (on rows of HalfCheetah DS-TD3 targets)."""
    n = values.shape[0]
    if k > n:
        return np.float32(0.0) if largest else np.float32(np.inf)
    bits = values.view(np.uint32)
    found = np.uint32(0)
    for b in range(30, -1, -1):  # bit 31, the sign, is clear in every magnitude
        trial = found | np.uint32(1 << b)
        count = 0
        if largest:
            for i in range(n):
                count += bits[i] >= trial
            found = trial if count >= k else found
        else:
            for i in range(n):
                count += bits[i] < trial
            found = trial if count < k else found
    return np.full(1, found, np.uint32).view(np.float32)[0]


@njit(cache=True, nogil=True)
def _gather(t, o, block_bound, challengers, bound):
    """Magnitudes and positions of the challengers above ``bound`` (or the connections below
    it), read from the blocks whose extreme ``block_bound`` passes it: in ascending order of
    rank (strongest challenger, weakest connection first).

    A chosen block holds one or two of them among its ``BLOCK`` entries. So each block is
    first flagged whole, in vector code, and only its words of eight flags that hold one are
    read entry by entry: half the time of reading every entry (HalfCheetah DS-TD3 targets)."""
    n = t.shape[0]
    bits, outside = t.view(np.uint32), o.view(np.uint8)
    limit = np.full(1, bound, np.float32).view(np.uint32)[0]
    blocks = 0
    for k in range(block_bound.shape[0]):
        if block_bound[k] > bound if challengers else block_bound[k] < bound:
            blocks += 1
    values = np.empty(blocks * BLOCK, np.float32)
    where = np.empty(blocks * BLOCK, np.int64)
    flags = np.zeros(BLOCK, np.uint8)  # a whole number of words, past a short last block too
    words = flags.view(np.uint64)
    count = 0
    for k in range(block_bound.shape[0]):
        if not (block_bound[k] > bound if challengers else block_bound[k] < bound):
            continue
        start, end = k * BLOCK, min(n, (k + 1) * BLOCK)
        block, out = bits[start:end], outside[start:end]
        if challengers:
            for j in range(block.shape[0]):
                flags[j] = out[j] & np.uint8((block[j] & MAGNITUDE) > limit)
        else:
            for j in range(block.shape[0]):
                flags[j] = (out[j] ^ np.uint8(1)) & np.uint8((block[j] & MAGNITUDE) < limit)
        for word in range((end - start + 7) // 8):
            if words[word] == 0:  # (a short last block leaves stale flags past its end: they
                continue  # only cost a look at their word, as only the block's own are counted)
            # every entry of the word is written and the count advances by its flag: a branch
            # per entry mispredicts on most flagged words
            for j in range(start + 8 * word, min(end, start + 8 * word + 8)):
                v = abs(t[j])
                values[count], where[count] = -v if challengers else v, j
                count += flags[j - start]
    order = np.argsort(values[:count], kind="mergesort")
    return values[:count][order], where[:count][order]


@njit(cache=True, nogil=True)
def _merge(t, o, block_strongest, block_weakest, strongest, weakest):
    """Swap the j-th strongest challenger for the j-th weakest connection while it is stronger.

    With k blocks read on each side, every challenger above the (k+1)-th strongest block's
    strongest (and above the weakest connection: no other can swap) is read, and so is every
    connection below the (k+1)-th weakest block's weakest: exact prefixes of both rankings. The
    merge is final once it stops inside them, or a side holds every candidate; otherwise k
    doubles (from 8)."""
    k = 8
    while True:
        above = max(_kth(block_strongest, k + 1, True), weakest)
        below = min(_kth(block_weakest, k + 1, False), strongest)
        c_val, c_idx = _gather(t, o, block_strongest, True, above)
        w_val, w_idx = _gather(t, o, block_weakest, False, below)
        count = min(c_val.shape[0], w_val.shape[0])
        swaps = 0
        while swaps < count and -c_val[swaps] > w_val[swaps]:
            swaps += 1
        every_challenger = above == weakest  # no challenger outside those read can swap
        every_connection = below == strongest
        if swaps == count and not (
            (swaps == c_val.shape[0] and every_challenger)
            or (swaps == w_val.shape[0] and every_connection)
        ):
            k *= 2
            continue
        for i in range(swaps):
            o[c_idx[i]] = False
            o[w_idx[i]] = True
        return


@njit(cache=True, nogil=True)
def prune_rows(target, outside):
    """``prune_to_count`` on a (rows, n) float32 target and bool ``outside``, in place; True if
    any challenger had entered (a nonzero entry outside the connections)."""
    rows, n = target.shape
    blocks = (n + BLOCK - 1) // BLOCK
    block_strongest = np.empty(blocks, np.float32)
    block_weakest = np.empty(blocks, np.float32)
    entered = False
    for r in range(rows):
        t = target[r]
        o = outside[r]
        _block_extremes(t, o, block_strongest, block_weakest)
        strongest = block_strongest.max()
        if strongest == 0.0:
            continue
        entered = True
        weakest = block_weakest.min()
        if strongest > weakest:
            _merge(t, o, block_strongest, block_weakest, strongest, weakest)
        _zero_outside(t, o)
    return entered


@njit(cache=True, nogil=True)
def prune_listed(target, outside, pointers, positions):
    """``prune_rows`` on the entries of each row r of ``target`` that ``positions[pointers[r]:
    pointers[r + 1]]`` list: every entry left out must be zero and outside the connections
    (a layer computed by its connections lists its target's connections and the online ones)."""
    entered = False
    values = np.empty((1, positions.shape[0]), np.float32)
    flags = np.empty((1, positions.shape[0]), np.bool_)
    for r in range(target.shape[0]):
        start, end = pointers[r], pointers[r + 1]
        n = end - start
        for k in range(n):
            values[0, k] = target[r, positions[start + k]]
            flags[0, k] = outside[r, positions[start + k]]
        if prune_rows(values[:, :n], flags[:, :n]):
            entered = True
            for k in range(n):
                target[r, positions[start + k]] = values[0, k]
                outside[r, positions[start + k]] = flags[0, k]
    return entered


@njit(cache=True, nogil=True)
def prune_layers(targets, outsides, pointers, positions):
    """``prune_rows`` on every layer of a network in one call (tuples of arrays); a layer with
    ``pointers`` (non-empty) is pruned over its listed entries (``prune_listed``)."""
    entered = False
    for i in range(len(targets)):
        if pointers[i].shape[0]:
            entered |= prune_listed(targets[i], outsides[i], pointers[i], positions[i])
        else:
            entered |= prune_rows(targets[i], outsides[i])
    return entered
