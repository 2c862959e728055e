"""The one-call API: uint8 RGB in, uint8 RGB out.

    import dream_jax
    out = dream_jax.dream(rgb, objective="inception_4c/output", iter_n=20)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax import compile_cache, deepdream, googlenet, objectives, preprocess
from dream_jax import devices as devices_
from dream_jax.config import DreamConfig
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
            image = preprocess.to_model(guide_rgb, preprocess.DREAM_MEAN_BGR)[None]
            acts = googlenet.apply(params, image, (term.layer,))[term.layer]
            data[str(term)] = acts[0].reshape(-1, acts.shape[-1])
    return data


def dream_pixels(params, images: np.ndarray, objective_list, config: DreamConfig, keys,
                 data=None, on_octave=None, devices=None) -> np.ndarray:
    """`deepdream` on uint8 RGB (B, H, W, 3), returning uint8 RGB. `devices`
    (a list, see devices.choose) shards the batch over a mesh of them; the
    pixels are those of one device."""
    compile_cache.enable_default()
    mean = preprocess.DREAM_MEAN_BGR
    model = preprocess.to_model(images, mean)
    count = len(model)
    if devices is not None and len(devices) > 1:
        mesh = devices_.mesh(devices)
        size = devices_.padded_size(count, len(devices))
        objective_list = list(objective_list) + [objective_list[-1]] * (size - count)
        model = jax.device_put(devices_.pad(model, size), devices_.batch_sharding(mesh))
        keys = jax.device_put(devices_.pad(np.asarray(keys), size), devices_.batch_sharding(mesh))
        params, data = jax.device_put((params, data or {}), devices_.replicated(mesh))
        out = deepdream.deepdream(params, model, objective_list, config, keys, data, on_octave)
    else:
        with jax.default_device(devices[0] if devices else None):
            out = deepdream.deepdream(params, model, objective_list, config, keys, data,
                                      on_octave)
    return preprocess.to_uint8(preprocess.from_model(np.asarray(out)[:count], mean))


def dream(image, objective="inception_4c/output", params=None, config: DreamConfig | None = None,
          seed: int = 0, guide=None, on_octave=None, devices=None, **overrides) -> np.ndarray:
    """Dream on uint8 RGB image(s): (H, W, 3) -> (H, W, 3), or (N, H, W, 3) with a
    list of M objectives -> (N, M, H, W, 3). `overrides` are DreamConfig fields
    (iter_n=20); `devices` (a list) shards the batch over them. Compiled octaves
    are cached on disk (see compile_cache)."""
    from dream_jax import weights  # only when no params are given
    params = weights.load_params() if params is None else params
    config = (config or DreamConfig()).replace(**overrides)
    single_image = np.ndim(image) == 3
    images = np.asarray(image)[None] if single_image else np.asarray(image)
    single_objective = not isinstance(objective, (list, tuple))
    objective_list = [objectives.as_objective(o) for o in
                      ([objective] if single_objective else objective)]
    n, m = len(images), len(objective_list)
    batch = np.repeat(images, m, axis=0)  # image-major: (n0,o0), (n0,o1), ...
    per_item = [objective_list[i % m] for i in range(n * m)]
    data = guide_data(params, None if guide is None else np.asarray(guide),
                      objectives.union_terms(objective_list))
    keys = jnp.stack([jax.random.PRNGKey(seed)] * (n * m))
    rgb = dream_pixels(params, batch, per_item, config, keys, data, on_octave, devices)
    rgb = rgb.reshape(n, m, *rgb.shape[1:])
    if single_objective:
        rgb = rgb[:, 0]
    return rgb[0] if single_image else rgb
