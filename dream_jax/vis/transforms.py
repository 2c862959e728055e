"""Transformation robustness: random small changes of the picture at each step.

A picture that excites a channel only at one exact pixel alignment is an
adversarial pattern, not a feature; optimising through random padding,
translation, scaling and rotation keeps what survives them (lucid's
`transform_robustness`). Every transform here is a pure function

    transform(key, image (H, W, C)) -> image

drawing its randomness from `key` only, so under `jax.vmap` each batch item
gets its own from its own key, inside the jitted step. Shapes are static:
`pad(n)` grows each side by n (H + 2n), `jitter(d)` crops a random window
d pixels smaller (H - d) — lucid's semantics, so a padded-then-jittered image
still shows the whole picture — while `random_scale` and `random_rotate`
resample onto the same grid about the centre (lucid's scale resizes the
image; a shape that depends on the key cannot be jitted). Resampling is
bilinear, reading the nearest edge pixel outside the image.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

from dream_jax.engine import loop
from dream_jax.errors import UserError

Transform = Callable[[jax.Array, jax.Array], jax.Array]


def pad(n: int, mode: str = "constant", value: float = 0.5) -> Transform:
    """Grow each side by n pixels: `constant` (value; 0.5 = grey in [0, 1]) or `reflect`."""
    if mode not in ("constant", "reflect"):
        raise ValueError(f"pad mode is 'constant' or 'reflect', not {mode!r}")

    def transform(key, image):
        widths = ((n, n), (n, n), (0, 0))
        if mode == "reflect":
            return jnp.pad(image, widths, mode="reflect")
        return jnp.pad(image, widths, mode="constant", constant_values=value)
    return transform


def jitter(d: int) -> Transform:
    """A random (H-d, W-d) window: the picture translated by 0..d pixels each way."""
    def transform(key, image):
        if d == 0:
            return image
        h, w, c = image.shape
        dy, dx = loop.random_offsets(key, 0, d)
        return jax.lax.dynamic_slice(image, (dy, dx, 0), (h - d, w - d, c))
    return transform


def _resample(image, matrix):
    """Bilinear image(matrix @ (p - centre) + centre) for every output position p."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                          jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")
    src_y = matrix[0, 0] * ys + matrix[0, 1] * xs + cy
    src_x = matrix[1, 0] * ys + matrix[1, 1] * xs + cx
    sample = lambda plane: ndimage.map_coordinates(plane, [src_y, src_x], order=1,
                                                   mode="nearest")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom about the centre by a factor drawn from `scales` (> 1 enlarges)."""
    choices = jnp.asarray(scales, jnp.float32)

    def transform(key, image):
        s = jax.random.choice(key, choices)
        return _resample(image, jnp.eye(2) / s)
    return transform


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle (degrees) drawn from `degrees`."""
    choices = jnp.asarray(np.deg2rad(np.asarray(degrees, np.float32)))

    def transform(key, image):
        a = jax.random.choice(key, choices)
        c, s = jnp.cos(a), jnp.sin(a)
        return _resample(image, jnp.array([[c, -s], [s, c]]))
    return transform


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply in order, each with its own key split from the one given."""
    transforms = tuple(transforms)

    def transform(key, image):
        for t, k in zip(transforms, jax.random.split(key, max(len(transforms), 1))):
            image = t(k, image)
        return image
    return transform


def standard() -> list[Transform]:
    """lucid's `standard_transforms`: pad 12 (grey), jitter 8, scale 0.9..1.1,
    rotate -10..10 degrees (0 five times more likely), jitter 4."""
    return [pad(12, "constant", 0.5), jitter(8),
            random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
            random_rotate(list(range(-10, 11)) + 5 * [0]), jitter(4)]


def output_shape(transform: Transform, height: int, width: int) -> tuple[int, int]:
    """(H, W) of a transformed picture (traced, nothing computed)."""
    image = jax.ShapeDtypeStruct((height, width, 3), jnp.float32)
    return tuple(jax.eval_shape(transform, jax.random.PRNGKey(0), image).shape[:2])


NAMES = ("standard", "none")


def by_name(name: str) -> Transform:
    """`standard` (lucid's list) or `none`."""
    if name == "standard":
        return compose(standard())
    if name == "none":
        return compose([])
    raise UserError(f"unknown transforms {name!r}; valid: {', '.join(NAMES)}")
