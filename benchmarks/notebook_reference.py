"""The original deepdream notebook's `make_step` and `deepdream`, as the notebook
writes them (numpy arrays (3, H, W), np.roll, scipy.ndimage.zoom, the notebook's
mean), with Caffe's forward/backward replaced by the PyTorch reference
GoogLeNet (itself held to OpenCV's Caffe importer by the tests).

What dream_jax is measured against for faithfulness (`benchmarks/agreement.py`).
Tests and benchmarks only.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage as nd
import torch

from benchmarks import torch_reference

MEAN = np.float32([104.0, 116.0, 122.0])  # the notebook's Classifier mean (BGR)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """The notebook's `preprocess`: HxWx3 RGB -> 3xHxW BGR, mean subtracted."""
    return np.float32(np.rollaxis(rgb, 2)[::-1]) - MEAN[:, None, None]


def deprocess(x: np.ndarray) -> np.ndarray:
    """The notebook's `deprocess`: float RGB HxWx3 (its showarray then truncates)."""
    return np.dstack((x + MEAN[:, None, None])[::-1])


def _gradient(p, src: np.ndarray, end: str) -> np.ndarray:
    """net.forward(end); dst.diff = dst.data (objective_L2); net.backward(start=end)."""
    x = torch.from_numpy(np.ascontiguousarray(src[None])).requires_grad_(True)
    act = torch_reference.forward(p, x, (end,))[end]
    (g,) = torch.autograd.grad(0.5 * act.square().sum(), x)
    return g[0].numpy()


def make_step(p, src: np.ndarray, rng: np.random.RandomState, step_size=1.5,
              end="inception_4c/output", jitter=32, clip=True) -> np.ndarray:
    ox, oy = rng.randint(-jitter, jitter + 1, 2)
    src = np.roll(np.roll(src, ox, -1), oy, -2)  # apply jitter shift
    g = _gradient(p, src, end)
    src = src + step_size / np.abs(g).mean() * g  # normalised ascent step
    src = np.roll(np.roll(src, -ox, -1), -oy, -2)  # unshift image
    if clip:
        src = np.clip(src, -MEAN[:, None, None], 255 - MEAN[:, None, None])
    return src


def deepdream(p, base_img: np.ndarray, iter_n=10, octave_n=4, octave_scale=1.4,
              end="inception_4c/output", jitter=32, seed=0, zoom_mode="constant") -> np.ndarray:
    """Float RGB (H, W, 3) out, before the notebook's uint8 truncation.

    zoom_mode: scipy's default "constant" is the notebook's; for some sizes it
    sets a shrunk octave's last row or column to 0 (the mean colour), when the
    sampling position rounds past the edge (e.g. 121 -> 86 rows). "nearest"
    clamps there instead, as dream_jax does."""
    rng = np.random.RandomState(seed)
    octaves = [preprocess(base_img)]
    for _ in range(octave_n - 1):
        octaves.append(nd.zoom(octaves[-1], (1, 1.0 / octave_scale, 1.0 / octave_scale), order=1,
                               mode=zoom_mode))
    detail = np.zeros_like(octaves[-1])
    for octave, octave_base in enumerate(octaves[::-1]):
        h, w = octave_base.shape[-2:]
        if octave > 0:
            h1, w1 = detail.shape[-2:]
            detail = nd.zoom(detail, (1, 1.0 * h / h1, 1.0 * w / w1), order=1, mode=zoom_mode)
        src = octave_base + detail
        for _ in range(iter_n):
            src = make_step(p, src, rng, end=end, jitter=jitter)
        detail = src - octave_base
    return deprocess(src)
