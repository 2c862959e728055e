"""The objective terms, lucid style: each is one `@term` class (see objectives.registry).

Each maps {layer: activation (H, W, C) or (classes,)} of one image, and the
`data` of the dream (guide features), to one scalar. Image terms read the image
itself (key `INPUT`) in model space: pixel levels (0..255 steps) measured from
the mean colour, the units a dream steps in; `input_distance` reads the
octave's input (key `REFERENCE`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax.objectives.registry import (CLASSIFIER, INPUT, REFERENCE, ObjectiveError, Term,
                                     channel_arg, channels, check_layer, class_index_arg,
                                     fraction_arg, integer, layer_arg, number, position, term,
                                     vector_arg)


@term("l2", "L2 of a layer: the original DeepDream objective (a bare `LAYER` means the "
      "same)", python="layer")
class L2(Term):
    """0.5 * mean over positions of sum_c x^2: the original `objective_L2`."""
    layer: str = layer_arg()
    spatial = False

    def __call__(self, acts, data):
        x = acts[self.layer]
        return jnp.mean(0.5 * jnp.sum(x * x, axis=-1))

    def __str__(self):
        return self.layer


@term("mean", "mean activation (the TensorFlow tutorial's loss)")
class Mean(Term):
    layer: str = layer_arg()
    spatial = False

    def __call__(self, acts, data):
        return jnp.mean(acts[self.layer])


@term("channel", "mean of channel C")
class Channel(Term):
    layer: str = layer_arg()
    channel: int = channel_arg()

    def __call__(self, acts, data):
        return jnp.mean(acts[self.layer][..., self.channel])


@term("neuron", "channel C at one position, Y/X as fractions (default: centre)")
class Neuron(Term):
    layer: str = layer_arg()
    channel: int = channel_arg()
    y: float = fraction_arg("Y")
    x: float = fraction_arg("X")
    separable = False  # one position of the whole map

    def __call__(self, acts, data):
        a = acts[self.layer]
        return a[position(self.y, a.shape[0]), position(self.x, a.shape[1]), self.channel]


@term("class", "logit of class K (checked against the model's class count)",
      python="class_logit")
class ClassLogit(Term):
    """Pre-softmax logit of one class (averaged over pool5 positions by the model)."""
    index: int = class_index_arg()
    layer: str = CLASSIFIER
    spatial = False

    def __call__(self, acts, data):
        return acts[CLASSIFIER][self.index]


@term("guide", "the original's guided dream: best-match dot product with `--guide`'s "
      "features")
class Guide(Term):
    """Each position's features matched to the most similar guide-image feature,
    the dot products averaged. The guide features (M, C) come in `data[str(self)]`."""
    layer: str = layer_arg()

    def __call__(self, acts, data):
        return jnp.mean(jnp.max(acts[self.layer] @ data[str(self)].T, axis=-1))


@term("channel_product", "channel interaction: mean of A times mean of B, high only "
      "where both fire")
class ChannelProduct(Term):
    """lucid's `channel(a) * channel(b)`, as one term so objectives stay linear in weights."""
    layer: str = layer_arg()
    channel: int = channel_arg("A")
    other: int = channel_arg("B")
    separable = False  # a product of whole-map means does not split over tiles

    def __call__(self, acts, data):
        x = acts[self.layer]
        return jnp.mean(x[..., self.channel]) * jnp.mean(x[..., self.other])


@term("direction", "dot with a vector in channel space, given by its nonzero entries "
      "(channel:weight); `obj.direction(LAYER, vector)` in Python")
class Direction(Term):
    """Mean over positions of the dot product with a vector in channel space: a
    feature that is a mix of channels. A tuple, so the term stays hashable."""
    layer: str = layer_arg()
    vector: tuple = vector_arg()

    @classmethod
    def from_text(cls, texts):
        if len(texts) < 2:
            raise ObjectiveError(f"direction() takes at least 2 argument(s), got {len(texts)}")
        weights = np.zeros(channels(check_layer(texts[0])))
        for entry in texts[1:]:
            c, sep, w = entry.partition(":")
            if not sep:
                raise ObjectiveError(f"direction(): expected CHANNEL:WEIGHT, got {entry[:40]!r}")
            c = integer(c.strip(), "direction() channel")
            if not 0 <= c < len(weights):
                raise ObjectiveError(f"channel {c} out of range for {texts[0]} "
                                     f"(0..{len(weights) - 1})")
            weights[c] += number(w.strip(), "direction() weight")
        return cls.create(texts[0], weights)

    def __call__(self, acts, data):
        x = acts[self.layer]
        return jnp.mean(x @ jnp.asarray(self.vector, x.dtype))

    def __str__(self):
        entries = ",".join(f"{c}:{w!r}" for c, w in enumerate(self.vector) if w)
        return f"direction({self.layer},{entries})"


@dataclasses.dataclass(frozen=True)
class Custom(Term):
    """Any Python callable over the activation dict (one image, no batch axis).
    `layer` is the deepest tap it reads: the net runs up to it. Python only: a
    function has no text form."""
    fn: object
    layer: str
    label: str = "custom"
    separable = False  # an arbitrary function need not split over tiles
    spatial = False

    def __call__(self, acts, data):
        return self.fn(acts)

    def __str__(self):
        return f"{self.label}({self.layer})"


# --- batch terms: one value per image that depends on the whole batch ---

@term("diversity", "lucid's Gram-matrix diversity across a batch (feature "
      "visualisation; a dream refuses it)")
class Diversity(Term):
    """Minus the mean cosine similarity between this image's channel Gram matrix
    and each other image's in the batch. `contributions` takes the batch's
    activations (B, H, W, C) and gives one value per image."""
    layer: str = layer_arg()
    separable = False
    batch = True

    def contributions(self, acts):
        x = acts[self.layer]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        grams = jnp.einsum("bpc,bpd->bcd", flat, flat).reshape(x.shape[0], -1)
        grams = grams / (jnp.linalg.norm(grams, axis=-1, keepdims=True) + 1e-10)
        similarity = grams @ grams.T
        others = jnp.sum(similarity, axis=1) - jnp.diagonal(similarity)
        return -others / max(x.shape[0] - 1, 1)

    def __call__(self, acts, data):
        raise ObjectiveError(f"{self} compares the images of a batch; evaluate it with "
                             f"evaluate_batch")


# --- image terms: penalties on the picture itself, composed like any term ---

@dataclasses.dataclass(frozen=True)
class ImageTerm(Term):
    """A term of the image (acts[INPUT]), not of a layer."""
    layer: str = INPUT
    separable = False  # neighbours and means across a tile's edge
    spatial = False


@term("tv", "total variation of the image (mean |neighbour difference|, in pixel "
      "levels): use as a penalty, `- 0.05*tv()`")
class TotalVariation(ImageTerm):
    def __call__(self, acts, data):
        x = acts[INPUT]
        return jnp.mean(jnp.abs(x[1:] - x[:-1])) + jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1]))


@term("blur", "distance to the image's own 3×3 blur, the blur held fixed (a penalty "
      "smooths)")
class Blur(ImageTerm):
    """0.5 * mean squared difference to the 3x3-box-blurred image, the blur held
    constant: its gradient step moves the image towards its blur (lucid's
    `blur_input_each_step`)."""
    def __call__(self, acts, data):
        x = acts[INPUT]
        padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        h, w = x.shape[:2]
        blurred = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9
        return 0.5 * jnp.mean((x - jax.lax.stop_gradient(blurred)) ** 2)


@term("image_l1", "mean |x| of the image's deviation from the mean colour (a "
      "penalty tames colours)")
class ImageL1(ImageTerm):
    def __call__(self, acts, data):
        return jnp.mean(jnp.abs(acts[INPUT]))


@term("image_l2", "½ mean x² of the image's deviation from the mean colour")
class ImageL2(ImageTerm):
    def __call__(self, acts, data):
        x = acts[INPUT]
        return 0.5 * jnp.mean(x * x)


@term("input_distance", "mean squared distance (levels²) to the input: **feature "
      "accentuation**, e.g. `channel(inception_4c/output,3) - 0.5*input_distance()`")
class InputDistance(ImageTerm):
    """As a penalty it keeps a dream close to its photo."""
    def __call__(self, acts, data):
        return jnp.mean((acts[INPUT] - acts[REFERENCE]) ** 2)
