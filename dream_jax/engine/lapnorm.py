"""Laplacian-pyramid gradient normalisation: the TensorFlow inception5h
example's `lap_normalize`, as an optax transformation.

The gradient is split into `levels` frequency bands (5x5 binomial blur, stride
2), each band is divided by its own RMS, and the bands are summed back. Every
scale then moves the image equally, so low frequencies are not drowned by
pixel noise: smoother dreams from noise.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

_BINOMIAL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0
LEVELS = 4  # the example's scale_n


def _down(image):
    """Blur and halve (H, W, C) -> (ceil(H/2), ceil(W/2), C), each channel alone."""
    channels = image.shape[-1]
    kernel = jnp.tile(jnp.asarray(_BINOMIAL)[:, :, None, None], (1, 1, 1, channels))
    return lax.conv_general_dilated(image[None], kernel, (2, 2), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=channels)[0]


def split(image, levels: int = LEVELS) -> list:
    """[coarsest, ..., finest band]: each band is the image minus the blurred
    image brought back up (the transpose of `_down`, times 4 to keep brightness)."""
    bands = []
    for _ in range(levels):
        low, transpose = jax.vjp(_down, image)
        bands.append(image - 4.0 * transpose(low)[0])
        image = low
    return [image] + bands[::-1]


def merge(bands: list):
    """Inverse of `split`."""
    image = bands[0]
    for band in bands[1:]:
        _, transpose = jax.vjp(_down, band)
        image = 4.0 * transpose(image)[0] + band
    return image


def normalize(g, levels: int = LEVELS, eps: float = 1e-10):
    """Each band of g divided by its RMS, summed back."""
    return merge([b / jnp.maximum(jnp.sqrt(jnp.mean(b * b)), eps) for b in split(g, levels)])


def laplacian_normalize(levels: int = LEVELS) -> optax.GradientTransformation:
    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: normalize(g, levels), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
