"""DeepDream: the original notebook's algorithm, jitted and vmapped.

    make_step:  roll the image by a random jitter, take the objective's
                gradient, roll it back, take the normalised ascent step (an
                optax transformation), clip to valid pixels.
    deepdream:  an `octave_n`-level pyramid, each level 1/`octave_scale` of the
                one below; dream from the smallest up, carrying the *detail*
                (dreamed minus original) to the next level.

One octave of a batch is one compiled call (`dream_level`: the detail of the
level below zoomed on, then `dream_octave`, `make_step`'s parts in the ascent
loop visualisations share, `loop.ascend`), so the hot path has no Python loop
and no host round-trip. Each image carries its own PRNG key and its objective's weights and
indices (data: only the objectives' structure compiles, see objectives): N
images x M objectives dream in one call, a new channel or class reuses the
compiled octaves, and a batch gives the pixels of the same images dreamed one
by one. Images are in model space (`Model.to_model`).
"""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dream_jax.model import DEFAULT as NET
from dream_jax.engine import compile_cache, devices, gradients, lapnorm, loop, optimizers
from dream_jax import objectives
from dream_jax.engine.config import DreamConfig, StepConfig
from dream_jax.errors import UserError

_EPS = 1e-8
_LOW, _HIGH = NET.to_model(np.zeros(3)), NET.to_model(np.full(3, 255.0))  # black, white


def normalized_ascent(step_size: float, normalize: str = "mean_abs"
                      ) -> optax.GradientTransformation:
    """DeepDream's update, step_size * g / mean|g| (or / std g), as an optax
    transformation whose updates are *added* (optax.apply_updates): ascent."""
    def update(updates, state, params=None):
        del params
        def scale(g):
            size = jnp.mean(jnp.abs(g)) if normalize == "mean_abs" else jnp.std(g)
            return g * (step_size / (size + _EPS))  # a zero gradient stays zero
        return jax.tree.map(scale, updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def ascent(config: "StepConfig") -> optax.GradientTransformation:
    """The dream's update rule: the gradient normalised (by mean |g|, std, or band
    by band), then the normalised step (DeepDream's own) or an optax optimiser at
    rate step_size, which minimises: so it is handed minus the gradient."""
    if config.optimizer == "normalized" and config.normalize != "lapnorm":
        return normalized_ascent(config.step_size, config.normalize)
    unit = (lapnorm.laplacian_normalize() if config.normalize == "lapnorm"
            else normalized_ascent(1.0, config.normalize))
    if config.optimizer == "normalized":
        return optax.chain(unit, optax.scale(config.step_size))
    return optax.chain(unit, optax.scale(-1.0), optimizers.make(
        config.optimizer, config.step_size, config.schedule, max(config.schedule_steps, 1)))


def clip_pixels(image):
    """Valid model-space pixels; a NaN never gets out."""
    return jnp.clip(jnp.nan_to_num(image), _LOW, _HIGH)


def make_step(gradient, config: "StepConfig", weights, references=None, masks=None
              ) -> loop.Step:
    """The notebook's make_step for a batch, as the parts of the shared ascent
    loop (`loop.ascend`): roll each image by a random jitter, take the
    objective's gradient `gradient(image, weights, reference)`, roll it back;
    take the normalised ascent step (`ascent`, an optax transformation); clip to
    valid pixels. With region masks (K, H, W, 1) per image the gradient is one
    per region (K, H, W, 3), and each counts where its mask is white, at the same
    strength (each is scaled to unit mean |g| under its mask, as if dreamed alone)."""
    def jittered(image, key, weights, reference, masks):
        oy, ox = loop.random_offsets(key, -config.jitter, config.jitter)
        roll = functools.partial(loop.roll, shifts=(oy, ox), axes=(0, 1), limit=config.jitter)
        g = loop.roll(gradient(roll(image), weights, jax.tree.map(roll, reference)),
                      (-oy, -ox), (-3, -2), config.jitter)
        if masks is not None:
            strength = (jnp.sum(jnp.abs(g) * masks, axis=(1, 2, 3), keepdims=True)
                        / (3 * jnp.sum(masks, axis=(1, 2, 3), keepdims=True) + _EPS))
            g = jnp.sum(masks * g / (strength + _EPS), axis=0)
        return g

    def batch_gradient(images, keys):
        return jax.vmap(jittered)(images, keys, weights, references, masks)
    return loop.Step(batch_gradient, ascent(config), clip_pixels)


def objective_value(params, image, weights, data, terms, kernels: str, reference=None):
    """The objective for one image (H, W, 3), in float32 whatever the network's dtype.
    Image terms see the image (and the octave's input, `reference`) in model space."""
    network_dtype = jax.tree.leaves(params)[0].dtype
    acts = NET.apply(params, image[None].astype(network_dtype),
                     objectives.layers_of(terms), kernels)
    acts = {k: v[0].astype(jnp.float32) for k, v in acts.items()}
    acts[objectives.INPUT] = image
    if reference is not None:
        acts[objectives.REFERENCE] = reference
    return objectives.evaluate(terms, weights, acts, data)


def needs_reference(terms) -> bool:
    return any(isinstance(t, objectives.InputDistance) for t in terms)


@functools.partial(jax.jit, static_argnames=("terms", "gradient", "config"))
def dream_octave(params, images, weights, data, keys, steps, references=None, masks=None, *,
                 terms, gradient, config: StepConfig):
    """`steps` steps on images (B, H, W, 3) with keys (B, 2) and `weights`: the
    objectives' Bindings over the slots `terms` (see objectives.bind), or (B, T)
    weights of terms whose indices are static. `steps` and the bindings are data:
    any step count, channel, class or weight shares one compilation. `references`
    (B, H, W, 3): the images `input_distance` measures from. With region `masks`
    (B, K, H, W, 1), weights are (B, K, T): objective k dreams where mask k is white."""
    params = jax.tree.map(lambda p: p.astype(config.precision), params)

    def image_gradient(image, weights, reference):
        def region_gradient(weights):
            value = functools.partial(objective_value, params, weights=weights, data=data,
                                      terms=terms, kernels=config.kernels, reference=reference)
            return gradient(value, image)
        return region_gradient(weights) if masks is None else jax.vmap(region_gradient)(weights)

    step = make_step(image_gradient, config, weights, references, masks)
    return loop.ascend(step, images, keys, steps)[0]


# --- the octave pyramid ---

def octave_shapes(height: int, width: int, octave_n: int, octave_scale: float
                  ) -> list[tuple[int, int]]:
    """Pyramid sizes, full size first; each level is the one before zoomed by
    1/octave_scale and rounded, as scipy.ndimage.zoom sizes it."""
    shapes = [(height, width)]
    for _ in range(octave_n - 1):
        h, w = shapes[-1]
        shapes.append((max(1, round(h * (1.0 / octave_scale))),
                       max(1, round(w * (1.0 / octave_scale)))))
    return shapes


def _linear_axis(x, size: int, axis: int):
    """Linear resampling along one axis with the end samples aligned (the
    notebook's scipy.ndimage.zoom(order=1)): no antialiasing when shrinking."""
    n = x.shape[axis]
    if n == size:
        return x
    position = np.arange(size) * ((n - 1) / (size - 1)) if size > 1 else np.zeros(1)
    low = np.minimum(np.floor(position).astype(np.int32), max(n - 2, 0))
    frac = (position - low).astype(np.float32)
    high = np.minimum(low + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    frac = frac.reshape(shape)
    return jnp.take(x, low, axis) * (1 - frac) + jnp.take(x, high, axis) * frac


@functools.partial(jax.jit, static_argnames=("shape",))
def zoom(images, shape: tuple[int, int]):
    """(B, H, W, C) -> (B, *shape, C), as the notebook's pyramid resizes."""
    return _linear_axis(_linear_axis(images, shape[0], 1), shape[1], 2)


def fits_network(height: int, width: int, layers) -> bool:
    """Whether an image of this size reaches the deepest of `layers`."""
    return not layers or NET.map_size(layers[-1], min(height, width)) >= 1


def gradient_for(shape: tuple[int, int], batch: int, terms, config: DreamConfig):
    """Whole or tiled gradient for one octave (see `gradients.plan`)."""
    layer = objectives.layers_of(terms)[-1]
    itemsize = jnp.dtype(config.precision).itemsize
    gradient = gradients.plan(*shape, batch, layer, config.tile_size,
                              config.memory_budget << 20, itemsize)
    if isinstance(gradient, gradients.Tiles):
        whole_only = [str(t) for t in terms if not getattr(t, "separable", True)]
        if whole_only:
            raise UserError(f"{', '.join(whole_only)} needs the whole image's gradient, but a "
                            f"{shape[1]}x{shape[0]} image is tiled (raise --memory_budget, "
                            f"drop --tile_size or use a smaller image)")
    return gradient


def _structure(objective_list, masks):
    """The slots (what compiles) and their Bindings, (B, T), or (B, K, T) with K
    region masks, where each entry of objective_list is a tuple of K objectives."""
    if masks is None:
        slots = objectives.slots_of(objective_list)
        return slots, objectives.bind(objective_list, slots)
    regions = [tuple(entry) for entry in objective_list]
    if any(len(r) != masks.shape[-1] for r in regions):
        raise UserError(f"{masks.shape[-1]} region mask(s) need as many objectives per image")
    slots = objectives.slots_of([o for r in regions for o in r])
    return slots, objectives.stack([objectives.bind(r, slots) for r in regions])


@functools.partial(jax.jit, static_argnames=("shapes",))
def pyramid(images, shapes: tuple[tuple[int, int], ...]):
    """The octave bases, full size first: each the one before it zoomed (the
    notebook's pyramid), in one call."""
    bases = [images]
    for shape in shapes[1:]:
        bases.append(zoom(bases[-1], shape))
    return bases


def with_detail(base, below):
    """`base` plus the detail dreamed on the level below (`below`: its dreamed
    image and its base), zoomed to `base`'s size: where an octave starts."""
    return base if below is None else base + zoom(below[0] - below[1], base.shape[1:3])


@functools.partial(jax.jit, static_argnames=("terms", "gradient", "config"))
def dream_level(params, base, weights, data, keys, octave, steps, below=None, masks=None, *,
                terms, gradient, config: StepConfig):
    """One level of the pyramid in one call: the detail dreamed on the level
    below (`below`: its dreamed image and its base) zoomed onto `base`, then
    `dream_octave`; the keys are folded with the octave's index (data). Region
    `masks` (B, H, W, K) come at full size and are zoomed here."""
    shape = base.shape[1:3]
    image = with_detail(base, below)
    keys = jax.vmap(jax.random.fold_in, (0, None))(keys, octave)
    if masks is not None:
        masks = jnp.moveaxis(zoom(masks, shape), -1, 1)[..., None]
    return dream_octave(params, image, weights, data, keys, steps,
                        base if needs_reference(terms) else None, masks,
                        terms=terms, gradient=gradient, config=config)


def deepdream(params, images, objective_list, config: DreamConfig = DreamConfig(),
              keys=None, data=None, on_octave=None, masks=None):
    """The octave loop. images: (B, H, W, 3) model space; objective_list: one
    Objective per image; keys: (B, 2). Returns the dreamed batch in model space.
    Region `masks` (B, H, W, K) in [0, 1]: objective_list then holds K objectives
    per image, objective k dreams where mask k is white, and where no mask is
    white the input is kept (grey blends). `on_octave(octave, steps)` is called
    after each octave (a host sync)."""
    chex.assert_rank(images, 4)
    chex.assert_axis_dimension(images, 3, 3)
    batch, height, width = images.shape[:3]
    slots, weights = _structure(objective_list, masks)
    weights = jax.tree.map(jnp.asarray, weights)
    used = list(dict.fromkeys(objective_list if masks is None else
                              [o for entry in objective_list for o in entry]))
    terms = objectives.union_terms(used)  # with their indices: for checks and messages
    layers = objectives.layers_of(slots)
    keys = jnp.stack([jax.random.PRNGKey(0)] * batch) if keys is None else keys
    chex.assert_shape(keys, (batch, 2))
    chex.assert_shape(weights.weights, (batch, *([] if masks is None else [masks.shape[-1]]),
                                        len(slots)))
    if masks is not None:
        chex.assert_shape(masks, (batch, height, width, None))
    data = data or {}
    if not layers:
        raise UserError(f"objective {objective_list[0]} reads no network layer: add a layer term")
    coupled = [str(t) for t in terms if getattr(t, "batch", False)]
    if coupled:
        raise UserError(f"{', '.join(coupled)} compares the images of a batch, which a dream "
                        f"takes one by one; use it in scripts/visualize.py")
    for objective in used:
        objectives.check_classes(objective, NET.num_classes(params))
    params = jax.device_put(params)  # once per dream, not per octave call (a placed tree stays)
    if not fits_network(height, width, layers):
        raise UserError(f"image {width}x{height} is too small for {layers[-1]}")
    shapes = octave_shapes(height, width, config.octave_n, config.octave_scale)[::-1]
    steps = jnp.int32(config.iter_n)
    # A batch sharded over a mesh (api.dream_pixels(devices=...)): weights and keys
    # follow its leading axis, and every octave is compiled for that placement.
    sharding = images.sharding if devices.is_sharded(images) else None
    place = (lambda x: jax.device_put(x, sharding)) if sharding else (lambda x: x)
    weights, keys = place(weights), place(keys)
    per_device = batch // len(sharding.device_set) if sharding else batch  # memory is per device
    masks = None if masks is None else place(jnp.asarray(masks, jnp.float32))
    step_config = StepConfig.of(config)  # kernels resolved once per dream

    def shaped(*shape):
        return jax.ShapeDtypeStruct((batch, *shape), jnp.float32, sharding=sharding)
    runs = [fits_network(*shape, layers) for shape in shapes]
    below_shapes = [None] + shapes[:-1]
    compiling = iter(compile_cache.compile_ahead(dream_level, [
        (dict(terms=slots, config=step_config,
              gradient=gradient_for(shape, per_device, terms, config)),
         (params, shaped(*shape, 3), weights, data, keys, jnp.int32(0), steps,
          None if below is None else (shaped(*below, 3), shaped(*below, 3)),
          None if masks is None else shaped(height, width, masks.shape[-1])))
        for shape, below, run in zip(shapes, below_shapes, runs) if run]))
    bases = pyramid(place(jnp.asarray(images, jnp.float32)), tuple(shapes[::-1]))
    del images  # large images: every image-sized copy counts
    below = None  # the level below: (its dreamed image, its base)
    for octave, (shape, run) in enumerate(zip(shapes, runs)):
        base = place(bases.pop())  # smallest first; dropped once its octave has run
        if run:
            image = next(compiling).result()(params, base, weights, data, keys,
                                             jnp.int32(octave), steps, below, masks)
        else:
            logging.warning("skipping octave %d: %dx%d is too small for %s", octave,
                            shape[1], shape[0], layers[-1])
            image = with_detail(base, below)
        if on_octave:
            jax.block_until_ready(image)  # so progress reports finished work
            on_octave(octave, config.iter_n)
        below = (place(image), base)
    if masks is not None:  # black keeps the input exactly, grey blends
        image = base + jnp.clip(jnp.sum(masks, -1, keepdims=True), 0, 1) * (image - base)
    return image  # the last octave's image itself, as the notebook returns it
