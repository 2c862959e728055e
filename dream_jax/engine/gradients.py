"""d objective / d image, whole or tile by tile: a memory knob, not a result knob.

`Whole()` is `jax.grad`. `Tiles` computes the same gradient over windows of a
fixed shape: each window is a core of `tile` pixels plus a `halo` on every
side (the receptive field of the objective's deepest layer), starts on a
multiple of that layer's stride (so its sampling grid is the whole image's),
and each pixel takes its gradient from the one window that holds it in its
core. Only the window's activations are alive at once. `plan` picks whole or
tiles from a memory budget.

Both are small frozen values, so they are static to `jax.jit` and a compiled
octave is specialised to them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from dream_jax.model import DEFAULT as NET

# Peak bytes of one gradient per byte of forward activations (all blobs up to
# the deepest tap): XLA's memory analysis gives 2.3-3.2 (BUILD_NOTES).
_BACKWARD_FACTOR = 3.5


@dataclasses.dataclass(frozen=True)
class Whole:
    """The whole image's gradient in one pass."""

    def __call__(self, value: Callable, image):
        return jax.grad(value)(image)


@dataclasses.dataclass(frozen=True)
class Tiles:
    """The whole image's gradient, window by window (see the module docstring)."""
    tile: int
    halo: int
    stride: int

    def windows(self, size: int) -> tuple[int, list[tuple[int, int, int]]]:
        """(window length, [(start, core_begin, core_end)]) along one axis of `size`."""
        length = self.tile + 2 * self.halo
        if length >= size:
            return size, [(0, 0, size)]
        length += (size - length) % self.stride  # so the last window can end at `size`
        cores = [(begin, min(begin + self.tile, size)) for begin in range(0, size, self.tile)]
        return length, [(min(max(0, (begin - self.halo) // self.stride * self.stride),
                             size - length), begin, end) for begin, end in cores]

    def __call__(self, value: Callable, image):
        (height, rows), (width, cols) = self.windows(image.shape[0]), self.windows(image.shape[1])
        plan = jnp.array([(*r, *c) for r in rows for c in cols], jnp.int32)
        grad = jax.grad(value)

        def add_window(total, window):
            y0, top, bottom, x0, left, right = (window[i] for i in range(6))
            g = grad(lax.dynamic_slice(image, (y0, x0, 0), (height, width, image.shape[2])))
            ys, xs = y0 + jnp.arange(height), x0 + jnp.arange(width)
            core = ((ys >= top) & (ys < bottom))[:, None, None] & ((xs >= left) & (xs < right))[None, :, None]
            current = lax.dynamic_slice(total, (y0, x0, 0), g.shape)
            return lax.dynamic_update_slice(total, current + jnp.where(core, g, 0), (y0, x0, 0)), None

        total, _ = lax.scan(add_window, jnp.zeros_like(image), plan)
        return total


def halo_for(layer: str) -> tuple[int, int]:
    """(halo, stride) for `layer`: half its receptive field, on its stride's grid."""
    size, stride = NET.receptive_field(layer)
    return -(-(size // 2) // stride) * stride, stride


@functools.lru_cache(maxsize=64)
def _activation_bytes_per_pixel(layer: str, itemsize: int) -> float:
    """Bytes of every blob up to `layer`, per input pixel (measured at 224²)."""
    size = NET.input_size
    shapes = NET.layer_shapes(size, size)
    last = NET.layers.index(layer)
    elements = sum(math.prod(shape) for name, shape in shapes.items()
                   if shape is not None and NET.layers.index(name) <= last)
    return elements * itemsize / (size * size)


def gradient_bytes(height: int, width: int, layer: str, itemsize: int = 4) -> int:
    """Estimated peak memory of one image's gradient through `layer`."""
    return int(_BACKWARD_FACTOR * _activation_bytes_per_pixel(layer, itemsize) * height * width)


# On CPU the gradients share memory with everything else on the machine, and
# larger tiles gain little once the halo is a small part of each window.
HOST_BUDGET_CAP = 2 << 30


def default_budget() -> int:
    """Bytes the gradients may use. An accelerator: half of its free memory.
    The host: a quarter of its available memory, at most HOST_BUDGET_CAP."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 2
    return min(_host_available() // 4, HOST_BUDGET_CAP)


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def plan(height: int, width: int, batch: int, layer: str, tile_size: int = 0,
         budget: int = 0, itemsize: int = 4) -> Whole | Tiles:
    """Whole when a batch of whole-image gradients fits `budget` bytes (0: the
    device's, see default_budget) and no `tile_size` is forced; else the largest
    tiles (a multiple of the layer's stride) whose windows fit it."""
    halo, stride = halo_for(layer)
    if tile_size:
        return Tiles(tile_size, halo, stride)
    budget = budget or default_budget()
    per_image = budget / batch  # vmapped: every image's gradient is alive at once
    if gradient_bytes(height, width, layer, itemsize) <= per_image:
        return Whole()
    side = math.sqrt(per_image / gradient_bytes(1, 1, layer, itemsize)) - 2 * halo
    tile = max(stride, int(side) // stride * stride)
    return Tiles(tile, halo, stride)


def window_overhead(height: int, width: int, gradient: Whole | Tiles) -> float:
    """Pixels computed per image pixel: 1 for Whole, more for overlapping windows."""
    if isinstance(gradient, Whole):
        return 1.0
    (h, rows), (w, cols) = gradient.windows(height), gradient.windows(width)
    return len(rows) * len(cols) * h * w / (height * width)

