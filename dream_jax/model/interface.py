"""What the rest of the library needs of a network, as one value: `Model`.

Dreams, visualisations, objectives and the workbench see a network only
through this: its taps in order, their shapes and receptive fields, its
preprocessing, its classifier and its parameters' shapes. An architecture is
one `Model` (registered in `dream_jax.model`); its geometry should come from
the network's own definition, as GoogLeNet's does. A `Model` is frozen and
hashable, so it can be a static argument of a jitted function.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dream_jax.model import preprocess

Params = Mapping[str, Any]


@dataclasses.dataclass(eq=False)
class Blob:
    """One blob of a network's graph: the operation that makes it, the blobs it
    reads, its channel count, and for a convolution its parameters' name,
    stride and kernel size. `name` is the tap it is yielded as (the image:
    "input")."""
    op: str
    inputs: tuple["Blob", ...] = ()
    channels: int = 3
    conv: str | None = None
    stride: int = 1
    kernel: int = 1
    name: str = "input"


@dataclasses.dataclass(frozen=True)
class Model:
    """A network as the library uses it.

    apply(params, images, taps, kernels="native") -> {tap: (N, ...) array}
        pure forward pass on images (N, H, W, 3) in model space; stops after
        the deepest tap; `kernels` picks the Caffe ops' gradient path.
    layer_shapes(height, width, classes=default) -> {tap: shape or None}
        one image's activation shapes, None where the image is too small.
    map_size(layer, side) -> int: the side of `layer`'s map (< 1: too small).
    receptive_field(layer) -> (size, stride) in input pixels.
    num_classes(params) -> int: the classifier's width in these params.
    abstract_params(classes) / param_shapes(classes): the parameter tree as
        ShapeDtypeStructs / as {layer: {leaf: shape}}.
    wiring() -> {tap: Blob}: the graph, for pre-ReLU values; None when the
        model does not describe it.
    """
    name: str
    layers: tuple[str, ...]           # tap names, in network order
    stages: tuple[str, ...]           # the main stages' outputs, in order
    input_size: int                   # the classification input's side
    classifier_layer: str             # the logits' tap (class objectives)
    default_classes: int              # the class count of the model's own weights
    mean_bgr: tuple[float, float, float]        # classification preprocessing
    dream_mean_bgr: tuple[float, float, float]  # dreams, visualisations, attribution
    apply: Callable[..., dict]
    layer_shapes: Callable[..., dict]
    map_size: Callable[[str, int], int]
    receptive_field: Callable[[str], tuple[int, int]]
    num_classes: Callable[[Params], int]
    abstract_params: Callable[..., Any]
    param_shapes: Callable[..., dict]
    wiring: Callable[[], dict[str, Blob]] | None = None

    def in_order(self, names: Iterable[str]) -> tuple[str, ...]:
        """The layers among `names`, in network order (other names dropped)."""
        wanted = set(names)
        return tuple(layer for layer in self.layers if layer in wanted)

    def channels(self, layer: str) -> int:
        """`layer`'s channel count (the classifier's: the model's own class count)."""
        return self.layer_shapes(self.input_size, self.input_size)[layer][-1]

    def to_model(self, rgb, mean: Sequence[float] | None = None):
        """RGB in 0..255 -> model space (`mean`: default the dream mean)."""
        return preprocess.to_model(rgb, self._mean(mean))

    def from_model(self, x, mean: Sequence[float] | None = None):
        """Model space -> float RGB in 0..255 (`mean`: default the dream mean)."""
        return preprocess.from_model(x, self._mean(mean))

    def _mean(self, mean) -> np.ndarray:
        return np.asarray(self.dream_mean_bgr if mean is None else mean, np.float32)
