"""The original notebook's "dreaming on its own output": dream, zoom in, repeat."""
from __future__ import annotations

from typing import Iterator

import jax
import numpy as np

from dream_jax import api
from dream_jax.engine import inputs
from dream_jax.engine.config import DreamConfig
from dream_jax.io import image_io


def zoom_in(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Crop the centre 1/factor of the image and scale it back to full size."""
    height, width = rgb.shape[:2]
    crop_h, crop_w = height / factor, width / factor
    top, left = (height - crop_h) / 2, (width - crop_w) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return image_io.resize(rgb, width, height, "bicubic", box=box)


def zoom_frames(params, first: np.ndarray, plan: inputs.Plan, entry, config: DreamConfig,
                seed: int, frames: int, factor: float) -> Iterator[np.ndarray]:
    """Yield `frames` dreamed frames (uint8 RGB), each dreamed on the zoomed previous
    one, with `plan`'s guide and masks (see engine.inputs; a mask is resized to the
    frames, which keep their size). The octave loop compiles once."""
    frame = first
    for i in range(frames):
        batch = plan.inputs(frame[None], [entry], jax.random.fold_in(jax.random.PRNGKey(seed), i))
        dreamed = api.run(params, batch, config)[0]
        yield dreamed
        frame = zoom_in(dreamed, factor)
