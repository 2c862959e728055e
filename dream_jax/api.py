"""The one-call API: uint8 RGB in, uint8 RGB out.

    import dream_jax
    out = dream_jax.dream(rgb, objective="inception_4c/output", iter_n=20)
"""
from __future__ import annotations

import jax
import numpy as np

from dream_jax.engine import deepdream
from dream_jax.model import DEFAULT as NET
from dream_jax.model import preprocess
from dream_jax import objectives
from dream_jax.engine import devices as devices_, inputs
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError


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


def run(params, batch: inputs.EngineInputs, config: DreamConfig, on_octave=None,
        devices=None) -> np.ndarray:
    """`dream_pixels` on one batch made by `inputs.Plan.inputs`."""
    return dream_pixels(params, batch.images, batch.objective_list, config, batch.keys,
                        batch.data, on_octave, devices, batch.masks)


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
        masks = [m for m, _ in regions]
        entries = [tuple(objectives.as_objective(o) for _, o in regions)]
    else:
        entries = [objectives.as_objective(o) for o in
                   ([objective] if single_objective else objective)]
    plan = inputs.plan(params, entries, guide, masks)
    n, m = len(images), len(entries)
    batch = plan.inputs(np.repeat(images, m, axis=0),  # image-major: (n0,o0), (n0,o1), ...
                        [entries[i % m] for i in range(n * m)], jax.random.PRNGKey(seed))
    rgb = run(params, batch, config, on_octave, devices)
    rgb = rgb.reshape(n, m, *rgb.shape[1:])
    if single_objective:
        rgb = rgb[:, 0]
    return rgb[0] if single_image else rgb
