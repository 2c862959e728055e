"""Data parallelism: a batch of images sharded over a `Mesh` of devices.

The mesh has one axis, "batch"; an image batch is split on its leading axis
and the parameters are replicated, so the same compiled octave (one program,
partitioned by XLA) serves 1 or N devices. Every image keeps its own PRNG key,
so the pixels do not depend on how many devices share the batch. A batch that
does not divide the device count is padded with copies of its last image and
cropped back afterwards.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dream_jax.errors import UserError

AXIS = "batch"


def choose(spec: str | int | None = None, available=None) -> list:
    """The devices `spec` names: "all" (or None), or a count N (the first N).
    `available` defaults to this process's own devices."""
    available = list(jax.local_devices() if available is None else available)
    if spec is None or str(spec).strip().lower() == "all":
        return available
    try:
        count = int(str(spec).strip())
    except ValueError:
        raise UserError(f"--devices must be 'all' or a positive count, got {spec!r}") from None
    if count < 1:
        raise UserError(f"--devices must be 'all' or a positive count, got {count}")
    if count > len(available):
        raise UserError(f"--devices={count}, but only {len(available)} "
                        f"{available[0].platform} device(s) are available")
    return available[:count]


def mesh(devices) -> Mesh:
    return Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh_: Mesh) -> NamedSharding:
    """Split the leading axis over the mesh (any rank)."""
    return NamedSharding(mesh_, PartitionSpec(AXIS))


def replicated(mesh_: Mesh) -> NamedSharding:
    return NamedSharding(mesh_, PartitionSpec())


def padded_size(batch: int, device_count: int) -> int:
    return -(-batch // device_count) * device_count


def pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pad the leading axis to `size` with copies of the last row (dreamed, then dropped)."""
    extra = size - len(x)
    return x if extra == 0 else np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])


def is_sharded(x) -> bool:
    """Whether `x` is an array placed by a NamedSharding (a mesh, not one device)."""
    return isinstance(getattr(x, "sharding", None), NamedSharding)
