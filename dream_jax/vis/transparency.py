"""MaCo-style transparency for feature visualisations: where the picture matters.

MaCo (Fel et al. 2023) shows a visualisation with an alpha channel made of the
|gradient| of the objective with respect to the pixels, accumulated while it
is optimised. Here it is accumulated over the same random transformations the
optimisation used (visualize's `transforms`), applied to the finished picture:
`samples` draws per picture, all pictures and draws in one jitted, vmapped
call. Pixels the channel ignores under every jitter, scale and rotation fade out.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax.model import DEFAULT as NET
from dream_jax.model import caffe_ops
from dream_jax.workbench import heatmap
from dream_jax.io import image_io
from dream_jax.vis import transforms, visualize


@functools.partial(jax.jit, static_argnames=("layer", "transform_name", "samples", "kernels"))
def accumulated_gradient(params, pictures, channels, keys, *, layer: str,
                         transform_name: str, samples: int, kernels: str = "native"):
    """(B, H, W) sum over `samples` transformations of |d channel mean / d pixel|,
    for pictures (B, H, W, 3) in [0, 1]."""
    transform = transforms.by_name(transform_name)

    def value(picture, channel, key):
        draws = jax.vmap(transform, (0, None))(jax.random.split(key, samples), picture)
        acts = NET.apply(params, visualize.to_model_space(draws), (layer,), kernels)
        return jnp.sum(jnp.take(acts[layer], channel, axis=-1).mean(axis=(1, 2)))

    grads = jax.vmap(jax.grad(value))(pictures, channels, keys)
    return jnp.sum(jnp.abs(grads), axis=-1)


def transparency(params, pictures, layer: str, channels, samples: int = 16, seed: int = 0,
                 transform_name: str = "standard", kernels: str = "auto") -> np.ndarray:
    """(B, H, W) float32 maps for uint8 pictures (B, H, W, 3), picture b for
    channel channels[b] of `layer`."""
    pictures = jnp.asarray(np.asarray(pictures, np.float32) / 255.0)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(pictures))
    maps = accumulated_gradient(params, pictures, jnp.asarray(channels, jnp.int32), keys,
                                layer=layer, transform_name=transform_name, samples=samples,
                                kernels=caffe_ops.resolve_kernels(kernels))
    return np.asarray(maps)


def write_beside(pictures, layer: str, channels, params, samples: int = 16, seed: int = 0,
                 chunk: int = 16) -> list:
    """For each visualisation PNG (a path), `<stem>_transparency.png` (RGBA) and
    its raw map `<stem>_transparency.npy` beside it; pictures[i] shows channels[i]."""
    written = []
    for start in range(0, len(pictures), chunk):
        paths = [Path(p) for p in pictures[start:start + chunk]]
        rgb = np.stack([image_io.read_image(p)[0] for p in paths])
        part = list(channels[start:start + chunk])
        maps = transparency(params, rgb, layer, part, samples, seed)
        for path, image, values, channel in zip(paths, rgb, maps, part):
            target = path.with_name(f"{path.stem}_transparency.png")
            heatmap.write_transparency(target, image, values, {"transparency": {
                "picture": path.name, "layer": layer, "channel": int(channel),
                "samples": samples, "seed": seed}})
            written.append(target)
    return written
