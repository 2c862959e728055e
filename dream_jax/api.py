"""The one-call API: uint8 RGB in, uint8 RGB out.

    import dream_jax
    out = dream_jax.dream(rgb, objective="inception_4c/output", iter_n=20)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from dream_jax.engine import deepdream
from dream_jax.model import DEFAULT as NET
from dream_jax.model import preprocess
from dream_jax import objectives
from dream_jax.engine import devices as devices_
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError


def guide_data(params, guide_rgb: np.ndarray | None, terms) -> dict:
    """{str(term): guide features (M, C)} for every Guide term, from the guide image
    at its own size (as the original notebook does)."""
    data = {}
    for term in terms:
        if isinstance(term, objectives.Guide):
            if guide_rgb is None:
                raise UserError(f"{term} needs a guide image (--guide)")
            h, w = guide_rgb.shape[:2]
            if not deepdream.fits_network(h, w, (term.layer,)):
                raise UserError(f"guide image {w}x{h} is too small for {term.layer}")
            image = NET.to_model(guide_rgb)[None]
            acts = NET.apply(params, image, (term.layer,))[term.layer]
            data[str(term)] = acts[0].reshape(-1, acts.shape[-1])
    return data


def dream_pixels(params, images: np.ndarray, objective_list, config: DreamConfig, keys,
                 data=None, on_octave=None, devices=None, masks=None) -> np.ndarray:
    """`deepdream` on uint8 RGB (B, H, W, 3), returning uint8 RGB. `devices`
    (a list, see devices.choose) shards the batch over a mesh of them; the
    pixels are those of one device. `masks`: see deepdream.deepdream."""
    model = NET.to_model(images)
    count = len(model)
    if devices is not None and len(devices) > 1:
        mesh = devices_.mesh(devices)
        size = devices_.padded_size(count, len(devices))
        objective_list = list(objective_list) + [objective_list[-1]] * (size - count)
        model = jax.device_put(devices_.pad(model, size), devices_.batch_sharding(mesh))
        keys = jax.device_put(devices_.pad(np.asarray(keys), size), devices_.batch_sharding(mesh))
        if masks is not None:
            masks = devices_.pad(np.asarray(masks, np.float32), size)
        params, data = jax.device_put((params, data or {}), devices_.replicated(mesh))
        out = deepdream.deepdream(params, model, objective_list, config, keys, data, on_octave,
                                  masks)
    else:
        with jax.default_device(devices[0] if devices else None):
            out = deepdream.deepdream(params, model, objective_list, config, keys, data,
                                      on_octave, masks)
    return preprocess.to_uint8(NET.from_model(np.asarray(out)[:count]))


def region_masks(masks, height: int, width: int) -> np.ndarray:
    """Masks (each (h, w) or (h, w, 3), uint8 0..255 or float 0..1: white dreams,
    black keeps) -> (H, W, K) float32 in [0, 1], resized to the image."""
    out = []
    for mask in masks:
        mask = np.asarray(mask)
        if mask.ndim == 3:
            mask = mask.mean(axis=-1)
        if mask.ndim != 2 or 0 in mask.shape:
            raise UserError(f"a mask is a 2-D greyscale (or RGB) image, got shape {mask.shape}")
        mask = mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0)
        if mask.shape != (height, width):
            mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.BILINEAR))
        out.append(np.clip(mask, 0.0, 1.0))
    return np.stack(out, axis=-1)


def dream(image, objective="inception_4c/output", params=None, config: DreamConfig | None = None,
          seed: int = 0, guide=None, on_octave=None, devices=None, mask=None, regions=None,
          **overrides) -> np.ndarray:
    """Dream on uint8 RGB image(s): (H, W, 3) -> (H, W, 3), or (N, H, W, 3) with a
    list of M objectives -> (N, M, H, W, 3). `overrides` are DreamConfig fields
    (iter_n=20); `devices` (a list) shards the batch over them. `mask` (white =
    dream, black = keep, grey = blend) limits the objective to a region;
    `regions` [(mask, objective), ...] dreams a different objective in each
    (then `objective` is not used). Compiled octaves are cached on disk (see
    compile_cache)."""
    from dream_jax.model import weights  # only when no params are given
    params = weights.load_params() if params is None else params
    config = (config or DreamConfig()).replace(**overrides)
    single_image = np.ndim(image) == 3
    images = np.asarray(image)[None] if single_image else np.asarray(image)
    single_objective = not isinstance(objective, (list, tuple))
    masks = None
    if mask is not None or regions:
        if not single_objective:
            raise UserError("with a mask or regions, give one objective per region, not a list")
        regions = ([(mask, objective)] if mask is not None else []) + list(regions or [])
        masks = region_masks([m for m, _ in regions], *images.shape[1:3])
        used = [objectives.as_objective(o) for _, o in regions]
        objective_list = [tuple(used)]  # one entry: the regions of every image
    else:
        used = objective_list = [objectives.as_objective(o) for o in
                                 ([objective] if single_objective else objective)]
    n, m = len(images), len(objective_list)
    batch = np.repeat(images, m, axis=0)  # image-major: (n0,o0), (n0,o1), ...
    per_item = [objective_list[i % m] for i in range(n * m)]
    data = guide_data(params, None if guide is None else np.asarray(guide),
                      objectives.union_terms(used))
    keys = jnp.stack([jax.random.PRNGKey(seed)] * (n * m))
    batch_masks = None if masks is None else np.repeat(masks[None], n * m, axis=0)
    rgb = dream_pixels(params, batch, per_item, config, keys, data, on_octave, devices,
                       batch_masks)
    rgb = rgb.reshape(n, m, *rgb.shape[1:])
    if single_objective:
        rgb = rgb[:, 0]
    return rgb[0] if single_image else rgb
