"""Receptive fields measured from the network itself, by gradient support.

The input pixels that one position of a layer's map can see are those where
the gradient of that position's activations is nonzero. Taking it for the
centre position and its right-hand and lower neighbours, over a few random
images (so a ReLU or max-pool that is off for one image is on for another),
gives the window's extent and the step between positions, with the network's
own paddings included: no table of kernels and strides to keep in step.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax.model import DEFAULT as NET


@dataclasses.dataclass(frozen=True)
class Field:
    """Where map position (y, x) looks in a `side` x `side` input: rows
    top + y*stride .. bottom + y*stride (exclusive), likewise columns."""
    top: int
    left: int
    bottom: int
    right: int
    stride: int
    side: int
    map_side: int

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of position (y, x), clipped to the input."""
        clip = lambda v: int(min(max(v, 0), self.side))
        return (clip(self.top + y * self.stride), clip(self.left + x * self.stride),
                clip(self.bottom + y * self.stride), clip(self.right + x * self.stride))


@functools.partial(jax.jit, static_argnames=("layer", "side", "count"))
def _supports(params, key, *, layer: str, side: int, count: int = 4):
    """(3, side, side) summed |gradient| of all channels at the centre position,
    the one below it and the one right of it, over `count` random images."""
    images = 60.0 * jax.random.normal(key, (count, side, side, 3))

    def at(dy, dx):
        def value(x):
            a = NET.apply(params, x, (layer,))[layer]
            return jnp.sum(a[:, a.shape[1] // 2 + dy, a.shape[2] // 2 + dx, :])
        return jnp.abs(jax.grad(value)(images)).sum(axis=(0, -1))

    return jnp.stack([at(0, 0), at(1, 0), at(0, 1)])


def _extent(support: np.ndarray, axis: int) -> tuple[int, int]:
    rows = np.flatnonzero(support.sum(axis=1 - axis) > 0)
    return int(rows[0]), int(rows[-1]) + 1


def measure(params, layer: str, side: int, seed: int = 0) -> Field:
    """The receptive field of `layer` for a `side` x `side` input."""
    map_side = NET.map_size(layer, side)
    if map_side < 2:
        raise ValueError(f"{layer} needs an input bigger than {side} px to measure its field")
    centre, below, right = np.asarray(_supports(params, jax.random.PRNGKey(seed),
                                                layer=layer, side=side))
    top, bottom = _extent(centre, 0)
    left, right_edge = _extent(centre, 1)
    shifts = (_extent(below, 0)[0] - top, _extent(below, 0)[1] - bottom,
              _extent(right, 1)[0] - left, _extent(right, 1)[1] - right_edge)
    # a field wider than the input is clipped on both sides and does not move:
    # then the step comes from the kernels and strides
    stride = max(shifts) if max(shifts) > 0 else NET.receptive_field(layer)[1]
    c = map_side // 2
    return Field(top - c * stride, left - c * stride, bottom - c * stride,
                 right_edge - c * stride, stride, side, map_side)
