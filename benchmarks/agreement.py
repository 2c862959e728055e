"""Faithfulness: dream_jax against the original notebook, and tiles against the whole image.

  notebook_step:  one step (octave_n=1, iter_n=1, jitter=0) of dream_jax and of the
                  notebook's make_step (`notebook_reference`) on the same photo
  notebook_dream: the whole default dream with jitter=0 (the pyramid, the zoom,
                  the detail carried up: everything but the random rolls, whose
                  generators differ), against the notebook as written, against it
                  with scipy's zoom clamped at the edges (see notebook_reference),
                  and, as the control for how chaotic the ascent is, the notebook
                  against itself on the input plus N(0, 1e-4) noise
  tiles:          one step with --tile_size=N against the whole image's gradient

Outputs are compared as uint8 (both rounded): the share of values within 1 level,
the mean and the max |difference|.
"""
from __future__ import annotations

import time

import numpy as np
from PIL import Image

import dream_jax
from dream_jax.engine import gradients
from dream_jax import objectives
from dream_jax.engine.config import DreamConfig

ONE_STEP = dict(octave_n=1, iter_n=1, jitter=0)


def load(path: str, width: int, height: int) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((width, height), Image.LANCZOS))


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.abs(np.rint(np.asarray(a, np.float64)) - np.rint(np.asarray(b, np.float64)))
    return {"within_1_level": float(np.mean(diff <= 1)), "mean_abs": float(diff.mean()),
            "max_abs": float(diff.max())}


def notebook(params, rgb: np.ndarray, controls: bool = False, **config) -> dict:
    """dream_jax vs the notebook on one photo, same config, jitter 0."""
    from benchmarks import notebook_reference, torch_reference
    settings = DreamConfig().replace(**config)
    tparams = torch_reference.torch_params(params)

    def run_notebook(image, zoom_mode="constant"):
        return np.clip(notebook_reference.deepdream(
            tparams, image, iter_n=settings.iter_n, octave_n=settings.octave_n,
            octave_scale=settings.octave_scale, jitter=0, zoom_mode=zoom_mode), 0, 255)

    start = time.perf_counter()
    ours = dream_jax.dream(rgb, params=params, config=settings)
    result = {"size": f"{rgb.shape[1]}x{rgb.shape[0]}", "config": config,
              "dream_jax_s": time.perf_counter() - start}
    start = time.perf_counter()
    theirs = run_notebook(rgb)
    result["notebook_s"] = time.perf_counter() - start
    result.update(compare(ours, theirs))
    if controls:
        clamped = run_notebook(rgb, "nearest")
        noisy = rgb + np.random.default_rng(0).normal(0, 1e-4, rgb.shape).astype(np.float32)
        result["vs_notebook_edges_clamped"] = compare(ours, clamped)
        result["control_notebook_vs_itself_on_1e-4_noise"] = compare(
            run_notebook(noisy, "nearest"), clamped)
    return result


def tiles(params, rgb: np.ndarray, tile: int) -> dict:
    """One step, tiles of `tile` against the whole image (a budget it fits)."""
    height, width = rgb.shape[:2]
    timed = {}
    for name, config in (("whole", dict(memory_budget=1 << 30)), ("tiled", dict(tile_size=tile))):
        start = time.perf_counter()
        timed[name] = dream_jax.dream(rgb, params=params, **ONE_STEP, **config)
        timed[f"{name}_s"] = time.perf_counter() - start
    layer = objectives.parse(objectives.DEFAULT).layers[-1]
    plan = gradients.plan(height, width, 1, layer, tile_size=tile)
    return {"size": f"{width}x{height}", "tile": tile, "halo": plan.halo,
            "window_pixels_per_pixel": gradients.window_overhead(height, width, plan),
            "whole_s": timed["whole_s"], "tiled_s": timed["tiled_s"],
            **compare(timed["whole"], timed["tiled"])}
