"""An exact running top-k per channel, mergeable in any order.

Candidates are ranked by (key descending, image index ascending): a total
order, so merging batches one at a time, in any batch size or after any
restart, keeps exactly the k entries a single sort of every image would.
Empty slots hold key -inf and index -1 and rank below every real entry.
"""
from __future__ import annotations

import numpy as np

FIELDS = ("key", "max", "mean", "index", "pos")
_DTYPES = {"key": np.float32, "max": np.float32, "mean": np.float32, "index": np.int64,
           "pos": np.int64}


def empty(channels: int, k: int) -> dict[str, np.ndarray]:
    """k empty slots for each of `channels`."""
    top = {f: np.zeros((channels, k), _DTYPES[f]) for f in FIELDS}
    top["key"][:] = -np.inf
    top["index"][:] = -1
    return top


def merge(top: dict[str, np.ndarray], candidates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The best k of `top` (C, k) and `candidates` (C, n) per channel."""
    k = top["key"].shape[1]
    joined = {f: np.concatenate([top[f], candidates[f].astype(_DTYPES[f])], axis=1)
              for f in FIELDS}
    # primary: key descending; secondary: index ascending (lexsort's last key is primary)
    order = np.lexsort((joined["index"], -joined["key"]), axis=-1)[:, :k]
    return {f: np.take_along_axis(joined[f], order, axis=1) for f in FIELDS}


def candidates(key, maximum, mean, pos, indices) -> dict[str, np.ndarray]:
    """A batch's stats (B, C) as (C, B) candidates; `indices` (B,) are the images'
    stream positions (-1 for padding, whose key is set to -inf)."""
    indices = np.asarray(indices, np.int64)
    key = np.where(indices[:, None] >= 0, np.asarray(key, np.float32), -np.inf)
    stats = {"key": key, "max": maximum, "mean": mean, "pos": pos,
             "index": np.broadcast_to(indices[:, None], key.shape)}
    return {f: np.ascontiguousarray(np.asarray(v).T) for f, v in stats.items()}


def indices_in(tops) -> set[int]:
    """Every image index that holds a slot in any of `tops`."""
    return {int(i) for top in tops for i in np.unique(top["index"]) if i >= 0}
