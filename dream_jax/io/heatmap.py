"""Pictures of per-pixel maps: heat-map overlays and transparency.

A signed map (grad_x_input, integrated gradients) is drawn red where pixels
raise the objective and blue where they lower it; an unsigned one (gradient,
smoothgrad, transparency) in red only. Strength is |map| over its 99th
percentile, so one extreme pixel does not wash out the rest. The raw map is
kept beside the picture as `.npy`, since a picture cannot be measured.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from dream_jax.io import atomic, image_io

METADATA_KEY = "dream_jax_map"


def strength(values: np.ndarray) -> np.ndarray:
    """|values| scaled to [0, 1] by the 99th percentile (0 everywhere for a zero map)."""
    magnitude = np.abs(np.nan_to_num(np.asarray(values, np.float32)))
    scale = np.percentile(magnitude, 99) if magnitude.size else 0.0
    if scale <= 0:
        scale = magnitude.max() if magnitude.size else 0.0
    return np.clip(magnitude / scale, 0, 1) if scale > 0 else np.zeros_like(magnitude)


def overlay(rgb: np.ndarray, values: np.ndarray) -> np.ndarray:
    """uint8 RGB: the photo in grey, the map's colour blended in by its strength."""
    grey = np.asarray(rgb, np.float32).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    alpha = 0.85 * strength(values)[..., None]
    red, blue = np.array([230.0, 30, 30]), np.array([30.0, 60, 230])
    colour = np.where((np.asarray(values) >= 0)[..., None], red, blue)
    out = (1 - alpha) * (0.6 * grey + 40) + alpha * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_npy(path: str | Path, values: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, np.float32))
    atomic.atomic_write(path, buffer.getvalue())


def write_overlay(path: str | Path, rgb: np.ndarray, values: np.ndarray, record: dict) -> Path:
    """`path` (PNG overlay, `record` in its metadata) and the raw map beside it
    as `<stem>.npy`; returns the .npy path."""
    path = Path(path)
    raw = path.with_suffix(".npy")
    write_npy(raw, values)
    image_io.write_png(path, overlay(rgb, values), None,
                       {METADATA_KEY: json.dumps(record, sort_keys=True)})
    return raw


def write_transparency(path: str | Path, rgb: np.ndarray, values: np.ndarray,
                       record: dict) -> None:
    """The picture as RGBA whose alpha is the map's strength (MaCo's way of
    showing where the picture matters), and the raw map as `<stem>.npy`."""
    path = Path(path)
    write_npy(path.with_suffix(".npy"), values)
    alpha = np.rint(255 * strength(values)).astype(np.uint8)
    image_io.write_png(path, np.asarray(rgb, np.uint8), alpha,
                       {METADATA_KEY: json.dumps(record, sort_keys=True)})
