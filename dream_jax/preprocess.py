"""RGB pixels <-> the network's input space, in one place.

The model was trained on BGR images in 0..255 with the per-channel mean
subtracted. `to_model` and `from_model` are exact inverses in float; they work
on numpy and jax arrays alike, with channels last.
"""
import numpy as np

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


def to_model(rgb):
    """RGB in 0..255 (uint8 or float) -> float32 BGR, mean subtracted."""
    return rgb[..., ::-1].astype(np.float32) - MEAN_BGR


def from_model(x):
    """Model space -> float RGB in 0..255 (not clipped or rounded)."""
    return (x + MEAN_BGR)[..., ::-1]


def to_uint8(rgb) -> np.ndarray:
    """Float RGB -> uint8, rounding and clipping; NaN becomes 0 (never written as garbage)."""
    rgb = np.nan_to_num(np.asarray(rgb, np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
