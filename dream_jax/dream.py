"""DeepDream: the original notebook's algorithm, with jit and vmap.

    make_step:  roll by a random jitter, gradient of the objective w.r.t. the
                image, normalise it (mean |g|, or std), step, roll back, clip.
    deepdream:  an `octave_n`-level pyramid scaled by `octave_scale`; dream
                from the smallest level up, carrying the *detail* (dreamed
                minus original at that level) to the next.

One octave's `iter_n` steps for a whole batch are a single compiled call
(`dream_octave`: a `fori_loop` over steps of a `vmap`ped step), so there is no
Python loop and no host round-trip per step. Each image carries its own PRNG
key and objective weights, so N images x M objectives dream in one call and a
batch gives the same pixels as the same images dreamed one by one.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import sys
import types
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax

from dream_jax import export_cache, googlenet, objectives, preprocess
from dream_jax.errors import UserError

NORMALIZERS = ("mean_abs", "std")
PRECISIONS = ("float32", "bfloat16")
_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class DreamConfig:
    """The notebook's knobs; defaults are the notebook's."""
    octave_n: int = 4
    octave_scale: float = 1.4
    iter_n: int = 10
    step_size: float = 1.5
    jitter: int = 32
    tile_size: int = 512
    normalize: str = "mean_abs"
    # Pad sizes up to a multiple of `bucket` so nearby sizes share one compilation
    # (objective masked to the real image). 0: exact sizes, the original's results;
    # padding changes border activations, so results differ about as much as a seed.
    bucket: int = 0
    # The network's compute dtype. bfloat16 is for accelerators with bf16 units
    # (on the CPUs measured here it was slower); the image, the gradient
    # normalisation and the step stay float32.
    precision: str = "float32"

    @property
    def step(self) -> "StepConfig":
        """The part a compiled octave depends on (not the steps, octaves or bucket)."""
        return StepConfig(**{f.name: getattr(self, f.name)
                             for f in dataclasses.fields(StepConfig)})

    def validate(self) -> "DreamConfig":
        checks = [
            (self.octave_n >= 1, f"octave_n must be >= 1, got {self.octave_n}"),
            (math.isfinite(self.octave_scale) and self.octave_scale > 1,
             f"octave_scale must be a finite number > 1, got {self.octave_scale}"),
            (self.iter_n >= 1, f"iter_n (steps) must be >= 1, got {self.iter_n}"),
            (math.isfinite(self.step_size) and self.step_size > 0,
             f"step_size must be a finite number > 0, got {self.step_size}"),
            (self.jitter >= 0, f"jitter must be >= 0, got {self.jitter}"),
            (self.tile_size >= 64, f"tile_size must be >= 64, got {self.tile_size}"),
            (self.bucket >= 0, f"bucket must be >= 0 (0 disables), got {self.bucket}"),
            (self.normalize in NORMALIZERS,
             f"normalize must be one of {', '.join(NORMALIZERS)}, got {self.normalize!r}"),
            (self.precision in PRECISIONS,
             f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What one step depends on: a compiled octave is specialised to these (static)
    and takes its number of steps as data, so --steps, --octaves and --bucket
    changes reuse compilations."""
    step_size: float
    jitter: int
    tile_size: int
    normalize: str
    precision: str


def octave_shapes(height: int, width: int, octave_n: int, octave_scale: float
                  ) -> list[tuple[int, int]]:
    """Pyramid sizes, full size first, each level 1/octave_scale of the one before."""
    shapes = [(height, width)]
    for _ in range(octave_n - 1):
        h, w = shapes[-1]
        shapes.append((max(1, round(h / octave_scale)), max(1, round(w / octave_scale))))
    return shapes


def fits_network(height: int, width: int, layers: Sequence[str]) -> bool:
    """Whether an image of this size reaches the deepest of `layers`."""
    return not layers or googlenet.layer_shapes(height, width)[layers[-1]] is not None


# --- one step (per image; vmapped over the batch) ---

def _objective_value(params, image, weights, data, terms, valid=None):
    """The objective for one image (H, W, 3); `valid` (2,) is the real image's size
    inside a padded one: only map positions of the real image count."""
    taps = objectives.layers_of(terms)
    network_dtype = jax.tree.leaves(params)[0].dtype  # see DreamConfig.precision
    acts = {k: v[0].astype(jnp.float32)
            for k, v in googlenet.apply(params, image[None].astype(network_dtype), taps).items()}
    masks = None
    if valid is not None:
        masks = {}
        for layer, act in acts.items():
            if act.ndim == 3:
                rows = jnp.arange(act.shape[0]) < googlenet.map_extent(layer, valid[0])
                cols = jnp.arange(act.shape[1]) < googlenet.map_extent(layer, valid[1])
                masks[layer] = (rows[:, None] & cols[None, :]).astype(act.dtype)
    return objectives.evaluate(terms, weights, acts, data, masks)


def _tile_starts(size: int, tile: int) -> list[tuple[int, int, int]]:
    """(start, own_begin, own_end) per tile: full-size tiles, the last one shifted
    back inside the image; each pixel's gradient comes from exactly one tile."""
    return [(min(i * tile, size - tile), i * tile, min((i + 1) * tile, size))
            for i in range(math.ceil(size / tile))]


def tiled_gradient(params, image, weights, data, key, terms, tile_size, offset=(0, 0)):
    """d objective / d image over fixed-size tiles, one at a time (bounded memory),
    taken at the image rolled by `offset` and rolled back.

    Tiles are full-size (the last one along an axis is shifted back inside the
    image) and each pixel takes its gradient from exactly one tile. Along an
    axis with several tiles the image is rolled by a further random offset, so
    the seams move every step; one roll does both. An image that fits one tile
    gets exactly the whole-image gradient."""
    grad_fn = jax.grad(_objective_value, argnums=1)
    height, width = image.shape[:2]
    th, tw = min(tile_size, height), min(tile_size, width)
    rows, cols = _tile_starts(height, th), _tile_starts(width, tw)
    limits = jnp.array([th if len(rows) > 1 else 1, tw if len(cols) > 1 else 1])
    shift = jnp.asarray(offset) + jax.random.randint(key, (2,), 0, limits)
    rolled = jnp.roll(image, (shift[0], shift[1]), axis=(0, 1))
    starts = jnp.array([(y0, x0, oy0, oy1, ox0, ox1)
                        for y0, oy0, oy1 in rows for x0, ox0, ox1 in cols], jnp.int32)

    def accumulate(total, s):
        y0, x0, oy0, oy1, ox0, ox1 = s[0], s[1], s[2], s[3], s[4], s[5]
        tile = lax.dynamic_slice(rolled, (y0, x0, 0), (th, tw, 3))
        g = grad_fn(params, tile, weights, data, terms)
        ys, xs = y0 + jnp.arange(th), x0 + jnp.arange(tw)
        own = ((ys >= oy0) & (ys < oy1))[:, None] & ((xs >= ox0) & (xs < ox1))[None, :]
        current = lax.dynamic_slice(total, (y0, x0, 0), (th, tw, 3))
        return lax.dynamic_update_slice(total, current + g * own[..., None], (y0, x0, 0)), None

    total, _ = lax.scan(accumulate, jnp.zeros_like(rolled), starts)
    return jnp.roll(total, (-shift[0], -shift[1]), axis=(0, 1))


def _gradient(params, image, weights, data, key, offset, terms, tile_size, valid):
    """d objective / d image at the image rolled by `offset`, rolled back: whole
    when the image fits a tile, else tile by tile (tiled images are never
    bucket-padded, see `padded_shape`)."""
    height, width = image.shape[:2]
    if height <= tile_size and width <= tile_size:
        g = jax.grad(_objective_value, argnums=1)(params, _roll(image, offset, valid), weights,
                                                  data, terms, valid)
        return _roll(g, -offset, valid)
    return tiled_gradient(params, image, weights, data, key, terms, tile_size, offset)


def _normalize(g, how: str, count):
    """g / (mean |g|) or g / std(g) over the `count` real values (padding is zero)."""
    if how == "mean_abs":
        scale = jnp.sum(jnp.abs(g)) / count
    else:
        mean = jnp.sum(g) / count
        scale = jnp.sqrt(jnp.maximum(jnp.sum(g * g) / count - mean * mean, 0.0))
    return g / (scale + _EPS)  # a zero gradient stays zero instead of 0/0 = NaN


def _roll(image, offset, valid):
    """jnp.roll of the real (valid) region only; bucket padding stays in place."""
    def indices(size, shift, limit):
        i = jnp.arange(size)
        return jnp.where(i < limit, (i - shift) % limit, i)
    rows = indices(image.shape[0], offset[0], valid[0])
    cols = indices(image.shape[1], offset[1], valid[1])
    return image[rows][:, cols]


def make_step(params, image, weights, data, key, valid, terms, config: StepConfig):
    """One gradient-ascent step on one image (H, W, 3) in model space whose real
    content is its top-left valid[0] x valid[1] corner (the rest: zero padding).

    The notebook rolls the image by a random jitter, steps, and rolls back; here
    the gradient is taken at the rolled image and rolled back before the step:
    the same pixels (a roll is a permutation), one image-sized copy fewer."""
    jitter_key, tile_key = jax.random.split(key)
    offset = jax.random.randint(jitter_key, (2,), -config.jitter, config.jitter + 1)
    g = _gradient(params, image, weights, data, tile_key, offset, terms, config.tile_size, valid)
    inside = ((jnp.arange(image.shape[0]) < valid[0])[:, None, None]
              & (jnp.arange(image.shape[1]) < valid[1])[None, :, None])
    g = jnp.where(inside, g, 0.0)
    image = image + config.step_size * _normalize(g, config.normalize, valid[0] * valid[1] * 3)
    image = jnp.nan_to_num(image)  # never let a NaN reach the output
    return jnp.clip(image, -preprocess.MEAN_BGR, 255.0 - preprocess.MEAN_BGR)


@functools.partial(jax.jit, static_argnames=("terms", "config"))
def dream_octave(params, images, weights, data, keys, steps, terms, config: StepConfig,
                 valid=None):
    """`steps` steps on a batch: images (B, H, W, 3), weights (B, T), keys (B, 2),
    valid (2,): the real size inside padded images (default: all) -- one compiled
    call, the steps a loop inside it. `steps` and `valid` are traced, so any step
    count, and every real size that pads to the same shape, share one compilation."""
    valid = jnp.array(images.shape[1:3]) if valid is None else jnp.asarray(valid, jnp.int32)
    params = jax.tree.map(lambda p: p.astype(config.precision), params)
    step = jax.vmap(functools.partial(make_step, terms=terms, config=config),
                    in_axes=(None, 0, 0, None, 0, None))

    def body(i, images):
        keys_now = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
        return step(params, images, weights, data, keys_now, valid)

    return lax.fori_loop(0, jnp.asarray(steps, jnp.int32), body, images)


@functools.partial(jax.jit, static_argnames=("shape",))
def _resize(images, shape):
    return jax.image.resize(images, (images.shape[0], *shape, images.shape[-1]), "linear")


def padded_shape(height: int, width: int, config: DreamConfig) -> tuple[int, int]:
    """The compiled shape for a real size: rounded up to the bucket; exact when
    bucketing is off or the image is tiled anyway (tiles have fixed shapes)."""
    if not config.bucket or max(height, width) > config.tile_size:
        return height, width
    up = lambda n: min(-(-n // config.bucket) * config.bucket, config.tile_size)  # noqa: E731
    return up(height), up(width)


def guide_data(params, guide_rgb: np.ndarray | None, terms) -> dict:
    """{str(term): guide features (M, C)} for every Guide term, from the guide image
    at its own size (as the original notebook does)."""
    data = {}
    for term in terms:
        if isinstance(term, objectives.Guide):
            if guide_rgb is None:
                raise UserError(f"{term} needs a guide image (--guide)")
            h, w = guide_rgb.shape[:2]
            if not fits_network(h, w, (term.layer,)):
                raise UserError(f"guide image {w}x{h} is too small for {term.layer}")
            acts = googlenet.apply(params, preprocess.to_model(guide_rgb)[None], (term.layer,))
            data[str(term)] = acts[term.layer][0].reshape(-1, acts[term.layer].shape[-1])
    return data


def deepdream(params, images, objective_list, config: DreamConfig = DreamConfig(),
              keys=None, data=None, on_octave=None):
    """The octave loop. images: (B, H, W, 3) float model space; objective_list:
    one Objective per image (same terms are shared, weights differ); keys (B, 2).
    Returns the dreamed batch in model space. `on_octave(i, steps)` reports progress."""
    config.validate()
    batch, height, width = images.shape[:3]
    terms = objectives.union_terms(objective_list)
    weights = jnp.asarray(objectives.weight_matrix(objective_list, terms))
    layers = objectives.layers_of(terms)
    keys = jnp.stack([jax.random.PRNGKey(0)] * batch) if keys is None else keys
    data = {} if data is None else data
    shapes = octave_shapes(height, width, config.octave_n, config.octave_scale)
    if not fits_network(height, width, layers):
        raise UserError(f"image {width}x{height} is too small for {layers[-1]}")
    bases = [jnp.asarray(images, jnp.float32)]
    del images  # large images: every image-sized copy counts, see BUILD_NOTES
    for shape in shapes[1:]:
        bases.append(_resize(bases[-1], shape))
    detail = None  # dreamed minus base, carried up the pyramid
    for level in reversed(range(len(shapes))):
        octave = len(shapes) - 1 - level
        base = bases.pop()  # smallest first; a level's base is dropped after its octave
        if detail is not None and detail.shape != base.shape:
            detail = _resize(detail, shapes[level])
        if not fits_network(*shapes[level], layers):
            logging.warning("skipping octave %d: %dx%d is too small for %s", octave,
                            shapes[level][1], shapes[level][0], layers[-1])
            if on_octave:
                on_octave(octave, 0)
            continue
        octave_keys = jax.vmap(lambda k: jax.random.fold_in(k, octave))(keys)
        (h, w), (ph, pw) = shapes[level], padded_shape(*shapes[level], config)
        dreamed = base if detail is None else base + detail
        detail = None
        if not level:
            del base  # the last octave's result is the output: its base is not needed
        if (ph, pw) != (h, w):
            dreamed = jnp.pad(dreamed, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))
        dreamed = export_cache.call(dream_octave, dict(terms=terms, config=config.step), params,
                                    dreamed, weights, data, octave_keys,
                                    jnp.int32(config.iter_n), valid=jnp.array((h, w), jnp.int32))
        dreamed = dreamed[:, :h, :w]
        if on_octave:
            jax.block_until_ready(dreamed)  # one sync per octave, so progress reports real work
            on_octave(octave, config.iter_n)
        if level:
            detail = dreamed - base
    return dreamed  # the last octave's image itself, as the notebook returns it


def dream_pixels(params, images: np.ndarray, objective_list, config: DreamConfig, keys,
                 data=None, on_octave=None) -> np.ndarray:
    """`deepdream` on uint8 RGB (B, H, W, 3), returning uint8 RGB: the pixel
    round trip every caller (API, scripts, batch, zoom) needs."""
    out = deepdream(params, preprocess.to_model(images), objective_list, config, keys, data,
                    on_octave)
    return preprocess.to_uint8(preprocess.from_model(np.asarray(out)))


def dream(image, objective="inception_4c/output", params=None, config: DreamConfig | None = None,
          seed: int = 0, guide=None, on_octave=None, **overrides) -> np.ndarray:
    """Dream on uint8 RGB image(s): (H, W, 3) -> (H, W, 3), or (N, H, W, 3) with M
    objectives -> (N, M, H, W, 3). `overrides` are DreamConfig fields (iter_n=20)."""
    from dream_jax import weights as weights_lib  # loaded lazily: the API works offline of disk
    params = weights_lib.load_params() if params is None else params
    config = dataclasses.replace(config or DreamConfig(), **overrides).validate()
    single_image = np.ndim(image) == 3
    images = np.asarray(image)[None] if single_image else np.asarray(image)
    single_objective = not isinstance(objective, (list, tuple))
    objective_list = [objectives.as_objective(o) for o in
                      ([objective] if single_objective else objective)]
    n, m = len(images), len(objective_list)
    batch = np.repeat(images, m, axis=0)  # image-major: (n0,o0), (n0,o1), ...
    per_item = [objective_list[i % m] for i in range(n * m)]
    terms = objectives.union_terms(objective_list)
    data = guide_data(params, None if guide is None else np.asarray(guide), terms)
    keys = jnp.stack([jax.random.PRNGKey(seed)] * (n * m))
    rgb = dream_pixels(params, batch, per_item, config, keys, data, on_octave)
    rgb = rgb.reshape(n, m, *rgb.shape[1:])
    if single_objective:
        rgb = rgb[:, 0]
    return rgb[0] if single_image else rgb


class _CallableModule(types.ModuleType):
    """`dream_jax.dream(image, ...)` is the one-call API, while `dream_jax.dream`
    stays the module that holds the algorithm (and its pieces) by name."""

    def __call__(self, *args, **kwargs):
        return dream(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
