"""BVLC GoogLeNet (the DeepDream network) in Flax, with Caffe's exact semantics.

Architecture only: no I/O. Layout is NHWC; a conv kernel is (kH, kW, in, out).
Layer (tap) names are Caffe's blob names from `deploy.prototxt`, so a ReLU'd
conv is tapped under the conv's own name, as in Caffe's in-place ReLU. The
network stops after the deepest requested tap: nothing above it is computed.
"""
from __future__ import annotations

import functools
import math
from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# name: (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) output channels.
INCEPTION = {
    "inception_3a": (64, 96, 128, 16, 32, 32),
    "inception_3b": (128, 128, 192, 32, 96, 64),
    "inception_4a": (192, 96, 208, 16, 48, 64),
    "inception_4b": (160, 112, 224, 24, 64, 64),
    "inception_4c": (128, 128, 256, 24, 64, 64),
    "inception_4d": (112, 144, 288, 32, 64, 64),
    "inception_4e": (256, 160, 320, 32, 128, 128),
    "inception_5a": (256, 160, 320, 32, 128, 128),
    "inception_5b": (384, 192, 384, 48, 128, 128),
}
# The stride-2 max-pool that comes before each of these blocks.
POOL_BEFORE = {"inception_4a": "pool3/3x3_s2", "inception_5a": "pool4/3x3_s2"}
_BRANCHES = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool", "pool_proj", "output")

LAYERS: tuple[str, ...] = (
    "conv1/7x7_s2", "pool1/3x3_s2", "pool1/norm1",
    "conv2/3x3_reduce", "conv2/3x3", "conv2/norm2", "pool2/3x3_s2",
    *(layer for block in INCEPTION for layer in (
        ([POOL_BEFORE[block]] if block in POOL_BEFORE else [])
        + [f"{block}/{branch}" for branch in _BRANCHES])),
    "pool5/7x7_s1", "loss3/classifier", "prob",
)
NUM_CLASSES = 1000
INPUT_SIZE = 224  # classification size; the convolutional taps take any size


def _window_taps(x, axis: int, window: int, stride: int, out: int, pads: tuple[int, int]):
    """The `window` strided views of x (padded with -inf) along one axis."""
    padded = jnp.pad(x, [pads if a == axis else (0, 0) for a in range(x.ndim)],
                     constant_values=-jnp.inf)
    index = [slice(None)] * x.ndim
    taps = []
    for offset in range(window):
        index[axis] = slice(offset, offset + (out - 1) * stride + 1, stride)
        taps.append(padded[tuple(index)])
    return taps


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _max_pool_axis(x, axis, window, stride, out, pads):
    return functools.reduce(jnp.maximum, _window_taps(x, axis, window, stride, out, pads))


def _max_pool_axis_fwd(x, axis, window, stride, out, pads):
    result = _max_pool_axis(x, axis, window, stride, out, pads)
    return result, (x, result)


def _max_pool_axis_bwd(axis, window, stride, out, pads, residuals, g):
    """Each output's gradient goes to the first input that attains its max (Caffe's
    rule), placed back with an interior-padded `lax.pad`: elementwise work that XLA
    fuses, where the default select-and-scatter lowers to a slow scatter on CPU."""
    x, result = residuals
    taken = jnp.zeros(result.shape, bool)
    grad = jnp.zeros_like(x)
    for offset, tap in enumerate(_window_taps(x, axis, window, stride, out, pads)):
        hit = (tap == result) & ~taken
        taken = taken | hit
        low = offset - pads[0]
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (low, x.shape[axis] - low - (out - 1) * stride - 1, stride - 1)
        grad = grad + lax.pad(jnp.where(hit, g, 0.0), jnp.zeros((), g.dtype), config)
    return (grad,)


_max_pool_axis.defvjp(_max_pool_axis_fwd, _max_pool_axis_bwd)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_nhwc(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x, kernel, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]):
    """A plain NHWC/HWIO convolution whose input gradient is written out as a
    convolution with the kernel flipped and transposed to HWIO. jax's own
    transpose rule leaves the kernel as HWOI; XLA:CPU hands that to YNNPACK only
    after turning it into HWIO, which it does for unrolled code but not inside a
    `while` loop, where the backward convolutions then ran ~2x slower."""
    return _conv_nhwc(x, kernel, strides, padding)


def _conv_nhwc_fwd(x, kernel, strides, padding):
    return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv_nhwc_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    pads = []
    for axis, stride, (low, high) in zip((1, 2), strides, padding):
        size = kernel.shape[axis - 1]
        leftover = (x.shape[axis] + low + high - size) % stride  # rows the forward never read
        pads.append((size - 1 - low, size - 1 - high + leftover))
    dx = lax.conv_general_dilated(g, flipped, (1, 1), pads, lhs_dilation=strides,
                                  dimension_numbers=_NHWC)
    _, kernel_vjp = jax.vjp(lambda k: _conv_nhwc(x, k, strides, padding), kernel)
    return dx, kernel_vjp(g)[0]  # the kernel gradient is dead code in a dream


conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _flax_conv(x, kernel, strides, padding, lhs_dilation=None, rhs_dilation=None,
               dimension_numbers=None, feature_group_count=1, precision=None):
    """`conv_nhwc` behind the signature nn.Conv calls (plain convolutions only)."""
    assert feature_group_count == 1 and not any(
        d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    return conv_nhwc(x, kernel, tuple(strides), tuple(tuple(p) for p in padding))


def max_pool_ceil(x: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
    """Caffe max-pooling on NHWC: output size rounds *up* (the right/bottom edge
    gets extra -inf padding; a window may not start inside the right padding).

    Separable (max over columns, then rows) with a hand-written gradient: 2x3
    strided taps instead of `lax.reduce_window`, whose gradient (an argmax
    reduce-window, iotas and a scatter) took most of the dream step on CPU."""
    def size_and_pads(n: int) -> tuple[int, tuple[int, int]]:
        out = math.ceil((n + 2 * pad - window) / stride) + 1
        if pad and (out - 1) * stride >= n + pad:
            out -= 1
        return out, (pad, (out - 1) * stride + window - n - pad)

    x = _max_pool_axis(x, 2, window, stride, *size_and_pads(x.shape[2]))
    return _max_pool_axis(x, 1, window, stride, *size_and_pads(x.shape[1]))


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 1.0) -> jax.Array:
    """Caffe's cross-channel LRN: x / (k + alpha/size * sum_window x^2) ** beta.

    The channel-window sum is `size` shifted slices of the zero-padded squares,
    added: elementwise work that XLA fuses into one loop (a banded matmul would
    cost `channels` multiply-adds per value, ~10% of the dream step's FLOPs)."""
    channels, half = x.shape[-1], size // 2
    squares = jnp.pad(x * x, [(0, 0)] * (x.ndim - 1) + [(half, half)])
    window_sum = sum(squares[..., i:i + channels] for i in range(size))
    scale = k + (alpha / size) * window_sum
    if beta == 0.75:
        return x * lax.rsqrt(scale) * lax.rsqrt(lax.sqrt(scale))  # scale ** -0.75
    return x * scale ** -beta


class GoogLeNet(nn.Module):
    """The main tower of BVLC GoogLeNet (no auxiliary heads, dropout is a no-op)."""

    @nn.compact
    def __call__(self, images: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
        """images: (N, H, W, 3) in model space (see preprocess). Returns {tap: activation}."""
        wanted = set(taps)
        unknown = wanted - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; valid: {', '.join(LAYERS)}")
        found = {}
        for name, value in self._blobs(images):
            if name in wanted:
                found[name] = value
                if len(found) == len(wanted):
                    break
        return found

    def _conv(self, x, features, kernel, name, stride=1, pad=0):
        conv = nn.Conv(features, (kernel, kernel), strides=stride,
                       padding=((pad, pad), (pad, pad)), conv_general_dilated=_flax_conv,
                       name=name)
        return nn.relu(conv(x))

    def _inception(self, block: str, x) -> Iterator[tuple[str, jax.Array]]:
        n1, n3r, n3, n5r, n5, npool = INCEPTION[block]
        b1 = self._conv(x, n1, 1, f"{block}/1x1")
        yield f"{block}/1x1", b1
        b3r = self._conv(x, n3r, 1, f"{block}/3x3_reduce")
        yield f"{block}/3x3_reduce", b3r
        b3 = self._conv(b3r, n3, 3, f"{block}/3x3", pad=1)
        yield f"{block}/3x3", b3
        b5r = self._conv(x, n5r, 1, f"{block}/5x5_reduce")
        yield f"{block}/5x5_reduce", b5r
        b5 = self._conv(b5r, n5, 5, f"{block}/5x5", pad=2)
        yield f"{block}/5x5", b5
        pooled = max_pool_ceil(x, 3, 1, pad=1)
        yield f"{block}/pool", pooled
        proj = self._conv(pooled, npool, 1, f"{block}/pool_proj")
        yield f"{block}/pool_proj", proj
        out = jnp.concatenate([b1, b3, b5, proj], axis=-1)
        yield f"{block}/output", out
        return out

    def _blobs(self, x) -> Iterator[tuple[str, jax.Array]]:
        """Every blob of the network in Caffe's order; consumers stop early."""
        x = self._conv(x, 64, 7, "conv1/7x7_s2", stride=2, pad=3)
        yield "conv1/7x7_s2", x
        x = max_pool_ceil(x, 3, 2)
        yield "pool1/3x3_s2", x
        x = local_response_norm(x)
        yield "pool1/norm1", x
        x = self._conv(x, 64, 1, "conv2/3x3_reduce")
        yield "conv2/3x3_reduce", x
        x = self._conv(x, 192, 3, "conv2/3x3", pad=1)
        yield "conv2/3x3", x
        x = local_response_norm(x)
        yield "conv2/norm2", x
        x = max_pool_ceil(x, 3, 2)
        yield "pool2/3x3_s2", x
        for block in INCEPTION:
            if block in POOL_BEFORE:
                x = max_pool_ceil(x, 3, 2)
                yield POOL_BEFORE[block], x
            x = yield from self._inception(block, x)
        x = nn.avg_pool(x, (7, 7), strides=(1, 1))
        yield "pool5/7x7_s1", x
        # The classifier is applied at every pool5 position and averaged: at
        # 224x224 pool5 is 1x1 and this is exactly Caffe's InnerProduct; larger
        # inputs get the fully-convolutional generalisation (class objectives).
        logits = nn.Dense(NUM_CLASSES, name="loss3/classifier")(x).mean(axis=(1, 2))
        yield "loss3/classifier", logits
        yield "prob", jax.nn.softmax(logits, axis=-1)


def _pool_ceil_size(n):
    return -((3 - n) // 2) + 1  # ceil((n - 3) / 2) + 1, for python or traced ints


# The size-changing ops in order: every other layer keeps its input's size.
_REDUCTIONS = (("conv1/7x7_s2", lambda n: (n - 1) // 2 + 1),
               ("pool1/3x3_s2", _pool_ceil_size), ("pool2/3x3_s2", _pool_ceil_size),
               ("pool3/3x3_s2", _pool_ceil_size), ("pool4/3x3_s2", _pool_ceil_size),
               ("pool5/7x7_s1", lambda n: n - 6))


def map_extent(layer: str, n):
    """Size along one axis of `layer`'s map for an input of size n (int or traced
    int): how much of a padded image's map belongs to the real image."""
    position = LAYERS.index(layer)
    for name, reduce in _REDUCTIONS:
        if LAYERS.index(name) <= position:
            n = reduce(n)
    return n


MODEL = GoogLeNet()


def apply(params, images: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
    """Pure forward pass: (params, images (N,H,W,3) model space, taps) -> {tap: array}."""
    return MODEL.apply({"params": params}, images, tuple(taps))


@functools.cache
def abstract_params():
    """The parameter pytree as ShapeDtypeStructs (no memory, no weights)."""
    init = functools.partial(MODEL.init, taps=("prob",))
    image = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(init, jax.random.PRNGKey(0), image)["params"]


def param_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """{layer: {"kernel": shape, "bias": shape}} for every learned layer, in order."""
    return {layer: {k: tuple(v.shape) for k, v in leaves.items()}
            for layer, leaves in abstract_params().items()}


@functools.lru_cache(maxsize=512)
def layer_shapes(height: int, width: int) -> dict[str, tuple[int, ...] | None]:
    """{tap: (H, W, C) or (classes,)} for one image of this size; None where the
    image is too small for that layer (a size Caffe would also reject)."""
    params = abstract_params()
    def trace(taps):
        image = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
        out = jax.eval_shape(functools.partial(apply, taps=taps), params, image)
        return {tap: tuple(out[tap].shape[1:]) for tap in taps}

    try:
        shapes = trace(LAYERS)
    except (TypeError, ValueError):  # too small somewhere: find where, layer by layer
        shapes = {}
        for tap in LAYERS:
            try:
                shapes.update(trace((tap,)))
            except (TypeError, ValueError):
                break
    result, too_small = {}, False
    for tap in LAYERS:  # every layer depends on the one before: once empty, all empty
        too_small = too_small or tap not in shapes or not all(d > 0 for d in shapes[tap])
        result[tap] = None if too_small else shapes[tap]
    return result
