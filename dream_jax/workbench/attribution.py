"""Attribution: how much each pixel of a photo contributes to an objective.

Any objective of the grammar (a class logit, a channel, a neuron, a sum of
them) is a scalar function of the image; its attribution map says which
pixels raise it. Four methods, all on the same compiled function:

    gradient              |d objective / d pixel|, summed over colours
    grad_x_input          gradient * (input - baseline), summed (signed)
    integrated_gradients  the path integral from the baseline (Sundararajan
                          et al. 2017), midpoint rule with `steps` points:
                          the map sums to f(input) - f(baseline)
    smoothgrad            |gradient| averaged over `steps` noisy copies
                          (Smilkov et al. 2017), noise `noise` * the image's range

The baseline is the mean colour (zero in model space). The IG and SmoothGrad
samples of every image run as one batch through one jitted call: no Python
loop over samples. `deletion_curve` is the field's faithfulness check: remove
the most-attributed pixels first and the objective should fall faster than
when removing random ones.
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax.model import DEFAULT as NET
from dream_jax.model import caffe_ops
from dream_jax import objectives, render
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError

METHODS = ("gradient", "grad_x_input", "integrated_gradients", "smoothgrad")
SIGNED = ("grad_x_input", "integrated_gradients")  # maps that can be negative


def check_objective(objective) -> objectives.Objective:
    """The objective as a value of one image alone: terms that compare with a
    batch, a guide or a dream's start have nothing to compare with here."""
    objective = objectives.as_objective(objective)
    for term in objective.terms:
        if getattr(term, "batch", False) or isinstance(
                term, (objectives.Guide, objectives.InputDistance)):
            raise UserError(f"{term} cannot be attributed: it compares the image with "
                            f"another one (a batch, a guide or a dream's start)")
    return objective


def check_size(name: str, height: int, width: int, objective: objectives.Objective) -> None:
    """The dream's refusal of an image too small for the objective's deepest layer
    (there the model's 7x7 pool averages over nothing and class logits are NaN)."""
    render.check_size(name, height, width, DreamConfig(octave_n=1), objective.layers)


def objective_values(params, images, weights, *, terms, kernels="native"):
    """(B,) objective values for images (B, H, W, 3) in model space."""
    acts = NET.apply(params, images, objectives.layers_of(terms), kernels)
    acts = {**acts, objectives.INPUT: images}
    per_image = jax.tree.map(lambda w: jnp.broadcast_to(w, (len(images), *jnp.shape(w))),
                             weights)  # one objective's bindings (or weights) for every image
    return objectives.evaluate_batch(terms, per_image, acts, {})


_values = jax.jit(objective_values, static_argnames=("terms", "kernels"))


def _samples(method: str, x, key, steps: int, noise: float):
    """(S, H, W, 3) points where the gradient is taken, for one image."""
    if method == "integrated_gradients":
        alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps
        return alphas[:, None, None, None] * x
    if method == "smoothgrad":
        sigma = noise * (x.max() - x.min())
        return x + sigma * jax.random.normal(key, (steps, *x.shape), x.dtype)
    return x[None]


def _integrate(total, images, keys, noise, method: str, steps: int):
    """(B, H, W) maps from `total(points)`, the summed objective of a batch of
    points (one image's samples after another), for images (B, H, W, 3)."""
    count = steps if method in ("integrated_gradients", "smoothgrad") else 1
    points = jax.vmap(lambda x, k: _samples(method, x, k, count, noise))(images, keys)
    flat = points.reshape(-1, *images.shape[1:])
    grads = jax.grad(total)(flat).reshape(points.shape).mean(axis=1)
    if method in SIGNED:
        return jnp.sum(grads * images, axis=-1)  # baseline 0: (input - baseline) = input
    return jnp.sum(jnp.abs(grads), axis=-1)


@functools.partial(jax.jit, static_argnames=("terms", "method", "steps", "kernels"))
def attribution_maps(params, images, weights, keys, noise, *, terms, method: str,
                     steps: int, kernels: str = "native"):
    """(B, H, W) maps for images (B, H, W, 3) in model space; all samples of all
    images are one batch through the network."""
    total = lambda p: jnp.sum(objective_values(params, p, weights, terms=terms,
                                               kernels=kernels))
    return _integrate(total, images, keys, noise, method, steps)


@functools.partial(jax.jit, static_argnames=("layer", "method", "steps", "kernels"))
def channel_maps(params, images, channels, keys, noise, *, layer: str, method: str,
                 steps: int, kernels: str = "native"):
    """`attribution_maps` for channel(layer, channels[b]) on image b, the channels
    as data: one compilation serves every channel of the layer."""
    count = steps if method in ("integrated_gradients", "smoothgrad") else 1
    per_point = jnp.repeat(channels, count)

    def total(points):
        acts = NET.apply(params, points, (layer,), kernels)[layer]
        return jnp.sum(jax.vmap(lambda a, c: jnp.take(a, c, axis=-1).mean())(acts, per_point))

    return _integrate(total, images, keys, noise, method, steps)


def attribute_channels(params, rgb, layer: str, channels, method: str = "integrated_gradients",
                       steps: int = 32, noise: float = 0.15, seed: int = 0,
                       kernels: str = "auto") -> np.ndarray:
    """Maps (B, H, W) of channel(layer, channels[b]) for uint8 RGB (B, H, W, 3):
    what `attribute` gives for each, in one call compiled once per layer."""
    check_size("image", *np.shape(rgb)[1:3], objectives.channel(layer, 0))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(rgb))
    maps = channel_maps(params, jnp.asarray(NET.to_model(np.asarray(rgb))),
                        jnp.asarray(channels, jnp.int32), keys, jnp.float32(noise),
                        layer=layer, method=method, steps=steps,
                        kernels=caffe_ops.resolve_kernels(kernels))
    return np.asarray(maps)


def _structure(objective):
    """The objective's slots (what compiles) and its bindings (indices and
    weights, data): a new channel, class or weight reuses the program."""
    slots = objectives.slots_of([objective])
    return slots, jax.tree.map(lambda a: jnp.asarray(a)[0], objectives.bind([objective], slots))


def attribute(params, rgb, objective, method: str = "integrated_gradients", steps: int = 32,
              noise: float = 0.15, seed: int = 0, kernels: str = "auto",
              name: str = "image") -> np.ndarray:
    """Attribution map(s) of `objective` for uint8 RGB (H, W, 3) -> (H, W) float32,
    or (B, H, W, 3) -> (B, H, W). Refuses an image too small for the objective."""
    if method not in METHODS:
        raise UserError(f"unknown attribution method {method!r}; valid: {', '.join(METHODS)}")
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    objective = check_objective(objective)
    rgb = np.asarray(rgb)
    single = rgb.ndim == 3
    batch = rgb[None] if single else rgb
    check_size(name, *batch.shape[1:3], objective)
    terms, weights = _structure(objective)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(batch))
    maps = attribution_maps(params, jnp.asarray(NET.to_model(batch)), weights,
                            keys, jnp.float32(noise), terms=terms, method=method, steps=steps,
                            kernels=caffe_ops.resolve_kernels(kernels))
    maps = np.asarray(maps)
    return maps[0] if single else maps


def deletion_masks(saliency: np.ndarray, fractions) -> np.ndarray:
    """(F, H, W) float masks, 0 where the top `fraction` of pixels by saliency
    are removed (ties broken by position, so the count is exact)."""
    order = np.argsort(-saliency.ravel(), kind="stable")
    masks = np.ones((len(fractions), saliency.size), np.float32)
    for i, fraction in enumerate(fractions):
        masks[i, order[:int(round(fraction * saliency.size))]] = 0.0
    return masks.reshape(len(fractions), *saliency.shape)


def deletion_curve(params, rgb, objective, saliency, fractions=np.linspace(0, 1, 11),
                   kernels: str = "native") -> np.ndarray:
    """The objective (F,) after replacing the most salient pixels of uint8 RGB
    (H, W, 3) with the baseline (mean colour), one fraction per value: all
    fractions in one call."""
    objective = check_objective(objective)
    terms, weights = _structure(objective)
    x = NET.to_model(np.asarray(rgb))
    removed = deletion_masks(np.asarray(saliency), list(fractions))[..., None] * x[None]
    return np.asarray(_values(params, jnp.asarray(removed), weights, terms=terms,
                              kernels=kernels))


def run(input_path: str, objective_text: str, output: str, method: str = "integrated_gradients",
        steps: int = 32, noise: float = 0.15, seed: int = 0, weights_dir=None,
        max_pixels: int = 0, kernels: str = "auto") -> dict:
    """Attribute `objective_text` on the image at `input_path`: writes `output`
    (the overlay PNG) and the raw map beside it; everything is checked before
    the weights load. Returns a summary (paths as given)."""
    from dream_jax.io import heatmap
    from dream_jax.io import image_io
    from dream_jax.model import weights
    if method not in METHODS:
        raise UserError(f"unknown attribution method {method!r}; valid: {', '.join(METHODS)}")
    output = render.check_output(output)
    objective = check_objective(objective_text)
    rgb, _ = image_io.read_image(input_path, max_pixels or image_io.DEFAULT_MAX_PIXELS)
    check_size(str(input_path), *rgb.shape[:2], objective)
    objectives.check_classes(objective, weights.num_classes(weights_dir))
    params = weights.load_params(weights_dir)
    values = attribute(params, rgb, objective, method, steps, noise, seed, kernels,
                       name=str(input_path))
    record = {"attribution": {"input": Path(input_path).name, "objective": str(objective),
                              "method": method, "steps": steps, "noise": noise, "seed": seed,
                              "sum": float(values.sum())}}
    raw = heatmap.write_overlay(output, rgb, values, record)
    return {"overlay": output, "raw": raw, "sum": float(values.sum())}
