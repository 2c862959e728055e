"""Top-k classification with the default model's converted weights (ImageNet's 1000
classes, or the converted model's own)."""
from __future__ import annotations

import jax
import numpy as np

from dream_jax.io import image_io
from dream_jax.model import DEFAULT as NET
from dream_jax.errors import UserError

SHORT_SIDE = 256


def center_crop_input(rgb: np.ndarray) -> np.ndarray:
    """224x224 goes in untouched; otherwise the centre 224x224 of the image with
    its shorter side scaled to 256. Only that crop is resampled (Pillow's
    resize of a source box), so the memory is 224x224 whatever the input's shape."""
    size = NET.input_size
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return rgb
    scale = SHORT_SIDE / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    sx, sy = new_w / width, new_h / height  # scaled pixels per source pixel
    box = (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
    return image_io.resize(rgb, size, size, "bilinear", box=box)


@jax.jit
def probabilities(params, images):
    """Class probabilities (N, classes) of images (N, 224, 224, 3) in model space."""
    return NET.apply(params, images, ("prob",))["prob"]


def classify(params, rgb: np.ndarray, labels: list[str], top_k: int = 5) -> list[dict]:
    """[{"index", "label", "prob"}] for the top_k classes, most probable first.
    `labels`: one per class of the model in `params`."""
    classes = NET.num_classes(params)
    if len(labels) != classes:
        raise UserError(f"{len(labels)} class labels for a model with {classes} classes")
    image = NET.to_model(center_crop_input(rgb), NET.mean_bgr)[None]
    probs = np.asarray(probabilities(params, image))[0]
    top = np.argsort(-probs, kind="stable")[:top_k]
    return [{"index": int(i), "label": labels[i], "prob": float(probs[i])} for i in top]
