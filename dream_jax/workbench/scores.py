"""Faithfulness scores of feature visualisations, against natural images.

For channel c of a layer, with its visualisation v_c:

  activation_ratio  max over positions of c on v_c, divided by the same on c's
                    top natural exemplar. > 1: the picture drives the unit
                    harder than any real image that was mined.
  beats_share       the share of the other channels' visualisations v_d on
                    which c's mean activation is lower than on v_c: 1 means
                    v_c is specific to c among the pictures made together.
  path_similarity   mean cosine similarity between v_c's channel means in
                    earlier layers and those of c's exemplars, and
  random_similarity the same for random natural images against those
                    exemplars (Geirhos et al. 2023: a picture can drive a unit
                    through a path natural images do not take; then
                    path_similarity falls below random_similarity).

All images of one call go through the network together (`exemplars.channel_stats`).
"""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np

from dream_jax.workbench import exemplars
from dream_jax.model import DEFAULT as NET
from dream_jax.io import image_io

METADATA_KEY = "dream_jax_scores"


def earlier_layers(layer: str, count: int = 2) -> tuple[str, ...]:
    """The last `count` stage outputs (conv1, conv2, each inception block) before `layer`."""
    before = NET.layers[:NET.layers.index(layer)]
    return tuple(s for s in NET.stages if s in before)[-count:]


def _stats(params, rgb, layers, chunk: int = 32):
    """{layer: (max, mean)} each (B, C) for uint8 RGB (B, H, W, 3), `chunk` at a time."""
    out = {layer: ([], []) for layer in layers}
    ordered = NET.in_order(layers)
    for start in range(0, len(rgb), chunk):
        x = jnp.asarray(NET.to_model(np.asarray(rgb[start:start + chunk])))
        stats = exemplars.channel_stats(params, x, layers=ordered)
        for layer in layers:
            out[layer][0].append(np.asarray(stats[layer][0]))
            out[layer][1].append(np.asarray(stats[layer][1]))
    return {layer: (np.concatenate(m), np.concatenate(a)) for layer, (m, a) in out.items()}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) cosine similarities of rows."""
    a = a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=-1, keepdims=True) + 1e-12)
    return a @ b.T


def channel_scores(params, layer: str, channels, pictures, top_scores, exemplar_images,
                   random_images, earlier: tuple[str, ...] | None = None) -> list[dict]:
    """Scores of pictures[i] (uint8 (N, h, w, 3)) as the visualisation of
    channels[i]; top_scores[i] is its top exemplar's spatial max,
    exemplar_images[i] its exemplars (K_i, S, S, 3), random_images (R, S, S, 3)."""
    channels = list(channels)
    earlier = earlier_layers(layer) if earlier is None else earlier
    vis = _stats(params, pictures, (*earlier, layer))
    rand = _stats(params, random_images, earlier) if earlier else {}
    own = vis[layer][1][:, channels]  # own[j, i]: channel i's mean on picture j
    results = []
    for i, c in enumerate(channels):
        others = np.delete(own[:, i], i)
        result = {"activation_ratio": float(vis[layer][0][i, c] / top_scores[i])
                  if top_scores[i] > 0 else None,
                  "beats_share": float(np.mean(own[i, i] > others)) if len(others) else None,
                  "earlier_layers": list(earlier)}
        if earlier:  # exemplar_images may load lazily: one channel's at a time in memory
            ex = _stats(params, np.asarray(exemplar_images[i]), earlier)
            path = [_cosine(vis[l][1][i:i + 1], ex[l][1]).mean() for l in earlier]
            base = [_cosine(rand[l][1], ex[l][1]).mean() for l in earlier]
            result["path_similarity"] = float(np.mean(path))
            result["random_similarity"] = float(np.mean(base))
        results.append(result)
    return results


def write_into_png(path, scores: dict) -> None:
    """Add `scores` to a picture's PNG metadata (pixels and other keys kept)."""
    metadata = image_io.read_png_metadata(path)
    rgb, alpha = image_io.read_image(path)
    metadata[METADATA_KEY] = json.dumps(scores, sort_keys=True)
    image_io.write_png(path, rgb, alpha, metadata)
