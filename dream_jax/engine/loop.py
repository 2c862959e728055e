"""The optimisation loop dreams and visualisations share: steps of gradient
ascent on a batch of parameterised images, in one `lax.fori_loop`.

Each item carries its own variables (what the optimiser moves: pixels for a
dream, Fourier coefficients or phases for a visualisation), optimiser state and
PRNG key. A step folds the step number into every key, makes the images from
the variables (`image_of`, differentiable; None: the variables are the
images), takes the gradient in image space (`gradient`), maps it back to the
variables through `image_of`'s vjp, and applies one optax update and a
projection (`project`, e.g. a clip to valid pixels) per item. Only
`lax.fori_loop` loops, so the step count is data and nothing returns to the
host between steps.

With `accumulate`, the loop also sums |image-space gradient| over the steps
and colour channels, per item: MaCo's transparency map (Fel et al. 2023),
where the picture mattered to the objective while it was made. It reuses the
gradient each step already takes.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax


class Step(NamedTuple):
    """One ascent step's parts. `gradient(images, keys) -> (B, H, W, C)` is the
    image-space gradient the optimiser is handed, for the batch and this
    step's per-item keys; the optimiser and projection act per item."""
    gradient: Callable
    optimizer: optax.GradientTransformation
    project: Callable = lambda variables: variables
    image_of: Callable | None = None


def random_offsets(key, low: int, high: int):
    """Two integers in [low, high] (a jitter's dy, dx) from one draw of random
    bits: `jax.random.randint` would hash a split key twice more, which on XLA:CPU
    is two more rolled threefry loops to compile per step. The modulo's bias is
    below 1e-7 for any jitter an image can take."""
    bits = jax.random.bits(key, (2,), jnp.uint32)
    return (bits % jnp.uint32(high - low + 1)).astype(jnp.int32) + low


def roll(x, shifts, axes, limit: int):
    """`jnp.roll(x, shifts, axes)` for traced shifts known to lie in [-limit, limit]:
    x wrapped by `limit` on each side of each axis (static slices), then one
    dynamic slice. jnp.roll takes every shift modulo its axis at run time, which
    is more compiled kernels in every step that jitters."""
    axes = [axis % x.ndim for axis in axes]
    widths = [(limit, limit) if a in axes else (0, 0) for a in range(x.ndim)]
    starts = [0] * x.ndim
    for axis, shift in zip(axes, shifts):
        starts[axis] = limit - shift
    return lax.dynamic_slice(jnp.pad(x, widths, mode="wrap"), starts, x.shape)


def update(step: Step, variables, grads, opt_state):
    """One item's optax update of `variables` by `grads`, then the projection."""
    updates, opt_state = step.optimizer.update(grads, opt_state, variables)
    return step.project(optax.apply_updates(variables, updates)), opt_state


def ascend(step: Step, variables, keys, steps, accumulate: bool = False):
    """`steps` (data) steps on batched `variables` with keys (B, 2). Returns the
    variables and, with `accumulate`, (B, H, W) summed |image gradient| (else None)."""
    def images_and_back(variables):
        if step.image_of is None:
            return variables, lambda g: g
        images, back = jax.vjp(step.image_of, variables)
        return images, lambda g: back(g)[0]

    def body(i, carry):
        variables, opt_state, total = carry
        images, back = images_and_back(variables)
        g = step.gradient(images, jax.vmap(jax.random.fold_in, (0, None))(keys, i))
        if accumulate:
            total = total + jnp.sum(jnp.abs(g), axis=-1)
        variables, opt_state = jax.vmap(functools.partial(update, step))(variables, back(g),
                                                                         opt_state)
        return variables, opt_state, total

    total = None
    if accumulate:
        images = jax.eval_shape(step.image_of or (lambda v: v), variables)
        total = jnp.zeros(images.shape[:-1], jnp.float32)
    carry = (variables, jax.vmap(step.optimizer.init)(variables), total)
    variables, _, total = lax.fori_loop(0, steps, body, carry)
    return variables, total

