"""A channel's value before its ReLU, recomputed from its convolution's input.

Why: a ReLU'd channel is exactly 0, with zero gradient, wherever it is
inactive, and from a near-grey start most channels of a deep layer are
inactive everywhere, so gradient ascent on them never starts (BUILD_NOTES:
4 of 6 channels of inception_4c/output stayed at 0). lucid visualises the
`*_pre_relu` tensors for this reason. The network's taps are the post-ReLU
blobs (Caffe's in-place ReLUs); the convolution is linear, so applying the
layer's own kernel to its input tap gives the pre-ReLU value exactly
(tested: relu(pre) equals the tap).

A block's `output` concatenates four ReLU'd convolutions (1x1, 3x3, 5x5,
pool_proj); its channel c is the branch holding c. The channel is data, not
a static argument, so one compiled call serves any channels of a layer.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from dream_jax.model import DEFAULT as NET
from dream_jax.model.interface import Blob
from dream_jax import objectives


class Branch(NamedTuple):
    source: str   # the input tap (objectives.INPUT: the image)
    conv: str     # the parameters' name
    offset: int   # its first channel in the layer
    count: int
    stride: int


def _branch(conv: Blob, offset: int) -> Branch:
    return Branch(conv.inputs[0].name, conv.conv, offset, conv.channels, conv.stride)


def branches(layer: str) -> tuple[Branch, ...] | None:
    """The convolutions whose ReLU'd outputs make up `layer` (read from the
    network's wiring); None when it is not a ReLU'd convolution or a
    concatenation of them (pools, norms, the classifier)."""
    blob = NET.wiring()[layer]
    if blob.op == "conv":
        return (_branch(blob, 0),)
    if blob.op == "concat" and all(b.op == "conv" for b in blob.inputs):
        offsets = [0]
        for b in blob.inputs[:-1]:
            offsets.append(offsets[-1] + b.channels)
        return tuple(_branch(b, offset) for b, offset in zip(blob.inputs, offsets))
    return None


def source_taps(layer: str) -> tuple[str, ...]:
    """The taps `channel_map` reads (besides the image)."""
    return tuple(b.source for b in branches(layer) if b.source != objectives.INPUT)


def _single_conv(x, kernel, bias, stride):
    """x (H, W, Cin), kernel (k, k, Cin) -> (H', W'): Caffe's convolution, pad k // 2."""
    pad = kernel.shape[0] // 2
    y = lax.conv_general_dilated(x[None], kernel[..., None], (stride, stride),
                                 ((pad, pad), (pad, pad)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y[0, ..., 0] + bias


def channel_map(params, acts, layer: str, channel):
    """Pre-ReLU map (H, W) of `channel` (an int or a traced scalar) of `layer`
    for one image: `acts` without batch axis, holding `source_taps(layer)` and,
    for conv1, objectives.INPUT (the image in model space)."""
    maps = []
    parts = branches(layer)
    for b in parts:
        local = jnp.clip(channel - b.offset, 0, b.count - 1)
        x = acts[b.source]
        kernel = jnp.take(params[b.conv]["kernel"], local, axis=-1)
        bias = jnp.take(params[b.conv]["bias"], local)
        maps.append(_single_conv(x.astype(jnp.float32), kernel.astype(jnp.float32), bias, b.stride))
    which = jnp.sum(jnp.asarray(channel) >= jnp.array([b.offset for b in parts[1:]], jnp.int32))
    return jnp.stack(maps)[which]
