"""BVLC GoogLeNet (the DeepDream network) in Flax, with Caffe's exact semantics.

Architecture only: no I/O. Layout is NHWC; a conv kernel is (kH, kW, in, out).
Layer (tap) names are Caffe's blob names from `deploy.prototxt`, so a ReLU'd
conv is tapped under the conv's own name, as in Caffe's in-place ReLU. The
network stops after the deepest requested tap: nothing above it is computed.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Iterator, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dream_jax.model import caffe_ops, preprocess
from dream_jax.model.interface import Blob, Model

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
# The main stages' outputs: the stem's two convolutions and each block.
STAGES = ("conv1/7x7_s2", "conv2/3x3", *(f"{block}/output" for block in INCEPTION))
NUM_CLASSES = 1000
CLASSIFIER_LAYER = "loss3/classifier"
INPUT_SIZE = 224  # classification size; the convolutional taps take any size


class GoogLeNet(nn.Module):
    """The main tower of BVLC GoogLeNet (no auxiliary heads, dropout is a no-op).
    `kernels`: the gradient path of the Caffe ops ("native" or "custom");
    `num_classes`: the classifier's width (1000 for ImageNet, 365 for Places365, ...)."""
    kernels: str = "native"
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, images: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
        """images: (N, H, W, 3) in model space (see preprocess). Returns {tap: activation}."""
        wanted = set(taps)
        unknown = wanted - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; valid: {', '.join(LAYERS)}")
        found = {}
        for name, value in _tower(self, images):
            if name in wanted:
                found[name] = value
                if len(found) == len(wanted):
                    break
        return found

    # The operations `_tower` is written in, on arrays. A learned layer's
    # {"kernel", "bias"} is one flax parameter named after its Caffe layer: the
    # tree nn.Conv and nn.Dense would make, without a submodule each to trace.
    def learned(self, name, kernel_shape):
        """A learned layer's {"kernel", "bias"}. flax's `param` would trace the
        initializer on every apply to check an existing parameter's shape; the
        weights store checks every shape when it loads, so an existing
        parameter is read as it is."""
        if self.has_variable("params", name):
            return self.get_variable("params", name)
        return self.param(name, _init_layer, kernel_shape)

    def conv(self, x, features, kernel, name, stride=1, pad=0):
        p = self.learned(name, (kernel, kernel, x.shape[-1], features))
        return caffe_ops.conv_relu(x, p["kernel"], p["bias"], (stride, stride),
                                   ((pad, pad), (pad, pad)), self.kernels)

    def max_pool(self, x, window, stride, pad=0):
        return caffe_ops.max_pool_ceil(x, window, stride, pad=pad, kernels=self.kernels)

    def norm(self, x):
        return caffe_ops.local_response_norm(x, kernels=self.kernels)

    def concat(self, branches):
        return jnp.concatenate(branches, axis=-1)

    def avg_pool(self, x, window):
        return nn.avg_pool(x, (window, window), strides=(1, 1))

    def classifier(self, x):
        # Applied at every pool5 position and averaged: at 224x224 pool5 is 1x1 and
        # this is exactly Caffe's InnerProduct; larger inputs get the
        # fully-convolutional generalisation (class objectives).
        p = self.learned(CLASSIFIER_LAYER, (x.shape[-1], self.num_classes))
        logits = lax.dot_general(x, p["kernel"], (((x.ndim - 1,), (0,)), ((), ())))
        return (logits + p["bias"]).mean(axis=(1, 2))

    def softmax(self, x):
        return jax.nn.softmax(x, axis=-1)


def _init_layer(key, kernel_shape):
    """A learned layer's random parameters (LeCun normal kernel, zero bias)."""
    fan_in = math.prod(kernel_shape[:-1])
    return {"kernel": jax.random.normal(key, kernel_shape) / math.sqrt(fan_in),
            "bias": jnp.zeros(kernel_shape[-1:])}


def _inception(ops, block: str, x) -> Iterator[tuple[str, Any]]:
    n1, n3r, n3, n5r, n5, npool = INCEPTION[block]
    b1 = ops.conv(x, n1, 1, f"{block}/1x1")
    yield f"{block}/1x1", b1
    b3r = ops.conv(x, n3r, 1, f"{block}/3x3_reduce")
    yield f"{block}/3x3_reduce", b3r
    b3 = ops.conv(b3r, n3, 3, f"{block}/3x3", pad=1)
    yield f"{block}/3x3", b3
    b5r = ops.conv(x, n5r, 1, f"{block}/5x5_reduce")
    yield f"{block}/5x5_reduce", b5r
    b5 = ops.conv(b5r, n5, 5, f"{block}/5x5", pad=2)
    yield f"{block}/5x5", b5
    pooled = ops.max_pool(x, 3, 1, pad=1)
    yield f"{block}/pool", pooled
    proj = ops.conv(pooled, npool, 1, f"{block}/pool_proj")
    yield f"{block}/pool_proj", proj
    out = ops.concat([b1, b3, b5, proj])
    yield f"{block}/output", out
    return out


def _tower(ops, x) -> Iterator[tuple[str, Any]]:
    """Every blob of the network in Caffe's order, computed by `ops` (the module
    on arrays, `_GeometryOps` on geometry, `_WiringOps` on the graph);
    consumers stop early. The topology is written only here."""
    x = ops.conv(x, 64, 7, "conv1/7x7_s2", stride=2, pad=3)
    yield "conv1/7x7_s2", x
    x = ops.max_pool(x, 3, 2)
    yield "pool1/3x3_s2", x
    x = ops.norm(x)
    yield "pool1/norm1", x
    x = ops.conv(x, 64, 1, "conv2/3x3_reduce")
    yield "conv2/3x3_reduce", x
    x = ops.conv(x, 192, 3, "conv2/3x3", pad=1)
    yield "conv2/3x3", x
    x = ops.norm(x)
    yield "conv2/norm2", x
    x = ops.max_pool(x, 3, 2)
    yield "pool2/3x3_s2", x
    for block in INCEPTION:
        if block in POOL_BEFORE:
            x = ops.max_pool(x, 3, 2)
            yield POOL_BEFORE[block], x
        x = yield from _inception(ops, block, x)
    x = ops.avg_pool(x, 7)
    yield "pool5/7x7_s1", x
    logits = ops.classifier(x)
    yield "loss3/classifier", logits
    yield "prob", ops.softmax(logits)


class _Geometry(NamedTuple):
    """Where a blob's positions sit in the input: `resize` are the (window, stride,
    pad, ceil) steps that change a side's length, `size` the width of input one
    position sees and `jump` the input distance between neighbouring positions."""
    resize: tuple[tuple[int, int, int, bool], ...] = ()
    size: int = 1
    jump: int = 1


class _GeometryOps:
    """`_tower`'s operations on `_Geometry`: the network's map sizes and receptive
    fields, read from the same code that builds it."""

    @staticmethod
    def _window(x: _Geometry, window: int, stride: int, pad: int, ceil: bool) -> _Geometry:
        same = stride == 1 and window == 2 * pad + 1  # keeps the side's length
        resize = x.resize if same else (*x.resize, (window, stride, pad, ceil))
        return _Geometry(resize, x.size + (window - 1) * x.jump, x.jump * stride)

    def conv(self, x, features, kernel, name, stride=1, pad=0):
        return self._window(x, kernel, stride, pad, ceil=False)

    def max_pool(self, x, window, stride, pad=0):
        return self._window(x, window, stride, pad, ceil=True)

    def avg_pool(self, x, window):
        return self._window(x, window, 1, 0, ceil=False)

    def concat(self, branches):
        if len({(b.resize, b.jump) for b in branches}) != 1:
            raise ValueError("concatenated branches must share their sampling grid")
        return branches[0]._replace(size=max(b.size for b in branches))

    def norm(self, x):  # across channels only
        return x

    classifier = softmax = norm  # geometry of pool5, averaged over its positions


class _WiringOps:
    """`_tower`'s operations on `Blob`s: which blob feeds which."""

    def conv(self, x, features, kernel, name, stride=1, pad=0):
        return Blob("conv", (x,), features, name, stride, kernel)

    def concat(self, branches):
        return Blob("concat", tuple(branches), sum(b.channels for b in branches))

    def max_pool(self, x, window, stride, pad=0):
        return Blob("max_pool", (x,), x.channels)

    def norm(self, x):
        return Blob("norm", (x,), x.channels)

    def avg_pool(self, x, window):
        return Blob("avg_pool", (x,), x.channels)

    def classifier(self, x):
        return Blob("classifier", (x,), 0)

    def softmax(self, x):
        return Blob("softmax", (x,), 0)


@functools.cache
def wiring() -> dict[str, Blob]:
    """{layer: Blob}: the network's graph, read from `_tower` (the classifier's
    channel count is not known here: it is the params' own)."""
    found = {}
    for name, blob in _tower(_WiringOps(), Blob("input")):
        blob.name = name
        found[name] = blob
    return found


@functools.cache
def _geometry() -> dict[str, _Geometry]:
    """{layer: geometry}, each the widest of every blob up to it, so that the last
    of several taps (in LAYERS order) bounds them all."""
    widest, found = _Geometry(), {}
    for name, g in _tower(_GeometryOps(), _Geometry()):
        widest = g._replace(size=max(g.size, widest.size))
        found[name] = widest
    return found


def map_size(layer: str, n: int) -> int:
    """Side of `layer`'s map for an input side of n (< 1: the input is too small);
    the classifier and prob take pool5's."""
    for window, stride, pad, ceil in _geometry()[layer].resize:
        n = (caffe_ops.pool_size(n, window, stride, pad) if ceil
             else (n + 2 * pad - window) // stride + 1)
    return n


def receptive_field(layer: str) -> tuple[int, int]:
    """(size, stride) in input pixels of one position of `layer`'s map: the
    window of input it can see (the widest of the blobs up to it) and the step
    between neighbouring positions."""
    geometry = _geometry()[layer]
    return geometry.size, geometry.jump


def model(kernels: str = "native", classes: int = NUM_CLASSES) -> GoogLeNet:
    """A fresh module for this gradient path and class count: not a shared one,
    because octaves are traced on several threads at once and flax does not
    promise that one unbound module can be applied from several threads."""
    return GoogLeNet(kernels=kernels, num_classes=classes)


def apply(params, images: jax.Array, taps: Sequence[str], kernels: str = "native"
          ) -> dict[str, jax.Array]:
    """Pure forward pass: (params, images (N,H,W,3) model space, taps) -> {tap: array}.
    `kernels` ("native" or "custom", see caffe_ops) picks the gradient path; the
    classifier's width is the params' own (`num_classes`), read from shapes only,
    so under jit it costs nothing at run time."""
    return model(kernels, num_classes(params)).apply({"params": params}, images, tuple(taps))


def num_classes(params) -> int:
    """The classifier's width: 1000 for ImageNet, other counts for other models
    (params without the classifier, e.g. only the stem: the default 1000)."""
    if CLASSIFIER_LAYER not in params:
        return NUM_CLASSES
    return int(params[CLASSIFIER_LAYER]["kernel"].shape[-1])


def param_shapes(classes: int = NUM_CLASSES) -> dict[str, dict[str, tuple[int, ...]]]:
    """{layer: {"kernel": shape, "bias": shape}} for every learned layer, in order,
    for a classifier of `classes` outputs: the shapes flax gives them, read from
    the wiring (so no network is traced to learn them)."""
    shapes = {}
    for blob in wiring().values():
        if blob.op == "conv":
            kernel = (blob.kernel, blob.kernel, blob.inputs[0].channels, blob.channels)
            shapes[blob.conv] = {"kernel": kernel, "bias": (blob.channels,)}
        elif blob.op == "classifier":
            shapes[CLASSIFIER_LAYER] = {"kernel": (blob.inputs[0].channels, classes),
                                        "bias": (classes,)}
    return shapes


def abstract_params(classes: int = NUM_CLASSES):
    """The parameter pytree as ShapeDtypeStructs (no memory, no weights), for a
    classifier of `classes` outputs."""
    return {layer: {leaf: jax.ShapeDtypeStruct(shape, jnp.float32)
                    for leaf, shape in leaves.items()}
            for layer, leaves in param_shapes(classes).items()}


@functools.lru_cache(maxsize=512)
def layer_shapes(height: int, width: int, classes: int = NUM_CLASSES
                 ) -> dict[str, tuple[int, ...] | None]:
    """{tap: (H, W, C) or (classes,)} for one image of this size; None where the
    image is too small for that layer (a size Caffe would also reject)."""
    result, too_small = {}, False
    for tap, blob in wiring().items():  # each layer depends on the one before
        h, w = map_size(tap, height), map_size(tap, width)
        too_small = too_small or min(h, w) < 1
        result[tap] = None if too_small else (h, w, blob.channels) if blob.channels else (classes,)
    return result


MODEL = Model(
    name="googlenet", layers=LAYERS, stages=STAGES, input_size=INPUT_SIZE,
    classifier_layer=CLASSIFIER_LAYER, default_classes=NUM_CLASSES,
    mean_bgr=tuple(float(v) for v in preprocess.MEAN_BGR),
    dream_mean_bgr=tuple(float(v) for v in preprocess.DREAM_MEAN_BGR),
    apply=apply, layer_shapes=layer_shapes, map_size=map_size,
    receptive_field=receptive_field, num_classes=num_classes,
    abstract_params=abstract_params, param_shapes=param_shapes, wiring=wiring)
