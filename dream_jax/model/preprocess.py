"""RGB pixels <-> the network's input space, in one place.

The model was trained on BGR images in 0..255 with the per-channel mean
subtracted. Classification uses the ILSVRC mean rounded as Caffe's examples
do (104, 117, 123); dreaming uses the original notebook's (104, 116, 122).
`to_model` and `from_model` are exact inverses in float; they work on numpy
and jax arrays alike, with channels last.
"""
import numpy as np

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)
DREAM_MEAN_BGR = np.array([104.0, 116.0, 122.0], np.float32)


def to_model(rgb, mean=MEAN_BGR):
    """RGB in 0..255 (uint8 or float) -> float32 BGR, mean subtracted."""
    return rgb[..., ::-1].astype(np.float32) - mean


def from_model(x, mean=MEAN_BGR):
    """Model space -> float RGB in 0..255 (not clipped or rounded)."""
    return (x + mean)[..., ::-1]


def to_uint8(rgb) -> np.ndarray:
    """Float RGB -> uint8, rounding and clipping; NaN becomes 0 (never written as garbage)."""
    rgb = np.nan_to_num(np.asarray(rgb, np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
