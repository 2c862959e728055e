"""Composable dream objectives, in the spirit of lucid's `objectives`.

An `Objective` is a weighted sum of terms; each term maps the network's
activations for one image to one scalar. Objectives compose with `+`, `-` and
scalar `*`:

    layer("inception_4c/output") + 0.5 * channel("inception_4d/3x3_reduce", 139)

Terms are small frozen (hashable) values, so the list of terms is static to
`jax.jit`, while the weights are an array that can be vmapped: M objectives
over the same terms dream in one compiled call. Every term averages over
spatial positions, so weights mean the same thing at any image or tile size.

Text form (flags): terms joined by `+`/`-`, each optionally `NUMBER *`:
    LAYER                  L2 of a layer (the original DeepDream objective)
    l2(LAYER)              the same, spelled out
    mean(LAYER)            mean activation (the TensorFlow tutorial's loss)
    channel(LAYER, C)      mean of channel C
    neuron(LAYER, C[, Y, X])  channel C at one position (default: the centre)
    class(K)               logit of class K (loss3/classifier)
    guide(LAYER)           best-match dot product with a guide image's features
    channel_product(LAYER, A, B)  product of two channels' means (interaction)
    diversity(LAYER)       how unlike the batch's other images this one is
                           (lucid's Gram-matrix diversity; 0 for one image)
    tv()                   total variation of the image (a penalty: `- 0.1*tv()`)
    blur()                 distance to the image blurred (lucid's blur penalty)
    image_l1(), image_l2() size of the image's deviation from the mean colour
    input_distance()       mean squared distance to the input image (feature
                           accentuation: `channel(L,C) - 0.5*input_distance()`)

Image terms read the image itself (key `INPUT`) in model space: pixel levels
(0..255 steps) measured from the mean colour, the units a dream steps in;
`input_distance` reads the octave's input (key `REFERENCE`).
    direction(LAYER, C:W, ...)  dot with a vector in channel space, given by
                           its nonzero entries (channel:weight)
Python only: `custom(fn, LAYER)` (a function has no text form).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax import googlenet
from dream_jax.errors import UserError

CLASSIFIER = googlenet.CLASSIFIER_LAYER
INPUT = "input"          # acts[INPUT]: the image, model space (BGR levels minus the mean)
REFERENCE = "reference"  # acts[REFERENCE]: the image the dream started from, same units


class ObjectiveError(UserError, ValueError):
    """An objective that names an unknown layer, a bad channel or bad syntax."""


def _check_layer(layer: str) -> str:
    if layer not in googlenet.LAYERS:
        import difflib
        close = difflib.get_close_matches(layer, googlenet.LAYERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ObjectiveError(f"unknown layer {layer!r}; {hint}valid layers: "
                             f"{', '.join(googlenet.LAYERS)}")
    return layer


def _channels(layer: str) -> int:
    shape = googlenet.layer_shapes(googlenet.INPUT_SIZE, googlenet.INPUT_SIZE)[layer]
    return shape[-1]


# --- terms: one scalar per image from {layer: activation (H, W, C) or (classes,)} ---
# A term is `separable` when it is a mean over map positions of something each
# position computes alone: then a tiled gradient equals the whole image's.


@dataclasses.dataclass(frozen=True)
class L2:
    """0.5 * mean over positions of sum_c x^2: the original `objective_L2`."""
    layer: str

    def __call__(self, acts, data):
        x = acts[self.layer]
        return jnp.mean(0.5 * jnp.sum(x * x, axis=-1))

    def __str__(self):
        return self.layer


@dataclasses.dataclass(frozen=True)
class Mean:
    """Mean activation of a layer."""
    layer: str

    def __call__(self, acts, data):
        return jnp.mean(acts[self.layer])

    def __str__(self):
        return f"mean({self.layer})"


@dataclasses.dataclass(frozen=True)
class Channel:
    """Mean activation of one channel over all positions."""
    layer: str
    channel: int

    def __call__(self, acts, data):
        return jnp.mean(acts[self.layer][..., self.channel])

    def __str__(self):
        return f"channel({self.layer},{self.channel})"


@dataclasses.dataclass(frozen=True)
class Neuron:
    """One channel at one position; (y, x) are fractions of the map (0.5 = centre)."""
    layer: str
    channel: int
    y: float = 0.5
    x: float = 0.5
    separable = False  # one position of the whole map

    def __call__(self, acts, data):
        a = acts[self.layer]
        row = min(int(self.y * a.shape[0]), a.shape[0] - 1)
        col = min(int(self.x * a.shape[1]), a.shape[1] - 1)
        return a[row, col, self.channel]

    def __str__(self):
        where = "" if (self.y, self.x) == (0.5, 0.5) else f",{self.y:g},{self.x:g}"
        return f"neuron({self.layer},{self.channel}{where})"


@dataclasses.dataclass(frozen=True)
class ClassLogit:
    """Pre-softmax logit of one ImageNet class (averaged over pool5 positions by
    the model)."""
    index: int
    layer: str = CLASSIFIER

    def __call__(self, acts, data):
        return acts[CLASSIFIER][self.index]

    def __str__(self):
        return f"class({self.index})"


@dataclasses.dataclass(frozen=True)
class Guide:
    """The original `objective_guide`: each position's features matched to the
    most similar guide-image feature; the dot products averaged. The guide
    features (M, C) come in `data[str(self)]`."""
    layer: str

    def __call__(self, acts, data):
        return jnp.mean(jnp.max(acts[self.layer] @ data[str(self)].T, axis=-1))

    def __str__(self):
        return f"guide({self.layer})"


@dataclasses.dataclass(frozen=True)
class ChannelProduct:
    """Channel interaction: the product of two channels' means, high only where
    both fire (lucid's `channel(a) * channel(b)`, kept linear in the weights)."""
    layer: str
    channel: int
    other: int
    separable = False  # a product of whole-map means does not split over tiles

    def __call__(self, acts, data):
        x = acts[self.layer]
        return jnp.mean(x[..., self.channel]) * jnp.mean(x[..., self.other])

    def __str__(self):
        return f"channel_product({self.layer},{self.channel},{self.other})"


@dataclasses.dataclass(frozen=True)
class Direction:
    """Mean over positions of the dot product with a vector in channel space:
    a feature that is a mix of channels. A tuple, so the term stays hashable."""
    layer: str
    vector: tuple

    def __call__(self, acts, data):
        return jnp.mean(acts[self.layer] @ jnp.asarray(self.vector, acts[self.layer].dtype))

    def __str__(self):
        entries = ",".join(f"{c}:{w!r}" for c, w in enumerate(self.vector) if w)
        return f"direction({self.layer},{entries})"


@dataclasses.dataclass(frozen=True)
class Custom:
    """Any Python callable over the activation dict (one image, no batch axis).
    `layer` is the deepest tap it reads: the net runs up to it."""
    fn: object
    layer: str
    name: str = "custom"
    separable = False  # an arbitrary function need not split over tiles

    def __call__(self, acts, data):
        return self.fn(acts)

    def __str__(self):
        return f"{self.name}({self.layer})"


# --- image terms: penalties on the picture itself, composed like any term ---


@dataclasses.dataclass(frozen=True)
class TotalVariation:
    """Mean absolute difference between neighbouring pixels: high for noise."""
    layer: str = INPUT
    separable = False  # differences across a tile's edge

    def __call__(self, acts, data):
        x = acts[INPUT]
        return (jnp.mean(jnp.abs(x[1:] - x[:-1])) + jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1])))

    def __str__(self):
        return "tv()"


@dataclasses.dataclass(frozen=True)
class Blur:
    """0.5 * mean squared difference to the 3x3-box-blurred image, the blur held
    constant: its gradient step moves the image towards its blur (lucid's
    `blur_input_each_step`)."""
    layer: str = INPUT
    separable = False

    def __call__(self, acts, data):
        x = acts[INPUT]
        padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        h, w = x.shape[:2]
        blurred = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9
        return 0.5 * jnp.mean((x - jax.lax.stop_gradient(blurred)) ** 2)

    def __str__(self):
        return "blur()"


@dataclasses.dataclass(frozen=True)
class ImageNorm:
    """Mean |x| (order 1) or 0.5 * mean x^2 (order 2) of the image's deviation from
    the mean colour: a penalty keeps colours tame."""
    order: int
    layer: str = INPUT
    separable = False

    def __call__(self, acts, data):
        x = acts[INPUT]
        return jnp.mean(jnp.abs(x)) if self.order == 1 else 0.5 * jnp.mean(x * x)

    def __str__(self):
        return f"image_l{self.order}()"


@dataclasses.dataclass(frozen=True)
class InputDistance:
    """Mean squared distance to the image the dream started from: as a penalty it
    keeps a dream close to its photo (feature accentuation)."""
    layer: str = INPUT
    separable = False

    def __call__(self, acts, data):
        return jnp.mean((acts[INPUT] - acts[REFERENCE]) ** 2)

    def __str__(self):
        return "input_distance()"


# --- batch terms: one value per image that depends on the whole batch ---


@dataclasses.dataclass(frozen=True)
class Diversity:
    """lucid's diversity: minus the mean cosine similarity between this image's
    channel Gram matrix and each other image's in the batch. `contributions`
    takes the batch's activations (B, H, W, C) and gives one value per image."""
    layer: str
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

    def __str__(self):
        return f"diversity({self.layer})"


Term = (L2 | Mean | Channel | Neuron | ClassLogit | Guide | ChannelProduct | Direction | Custom
        | TotalVariation | Blur | ImageNorm | InputDistance | Diversity)


@dataclasses.dataclass(frozen=True)
class Objective:
    """sum_i weights[i] * terms[i](activations)."""
    terms: tuple = ()
    weights: tuple = ()

    def __post_init__(self):
        for term in self.terms:
            _validate(term)

    @property
    def layers(self) -> tuple[str, ...]:
        """The taps this objective reads, in network order (the net stops at the last)."""
        return layers_of(self.terms)

    @property
    def needs_guide(self) -> bool:
        return any(isinstance(t, Guide) for t in self.terms)

    @property
    def couples_batch(self) -> bool:
        """Whether a term compares the images of a batch (diversity)."""
        return any(getattr(t, "batch", False) for t in self.terms)

    def __add__(self, other):
        other = as_objective(other)
        return Objective(self.terms + other.terms, self.weights + other.weights)

    def __sub__(self, other):
        return self + (-1.0) * as_objective(other)

    def __neg__(self):
        return (-1.0) * self

    def __mul__(self, scale):
        if not isinstance(scale, (int, float)) or not np.isfinite(scale):
            raise ObjectiveError(f"objectives scale by finite numbers, not {scale!r}")
        return Objective(self.terms, tuple(w * float(scale) for w in self.weights))

    __rmul__ = __mul__

    def __str__(self):
        text = ""
        for w, t in zip(self.weights, self.terms):
            body = str(t) if abs(w) == 1 else f"{abs(w):g}*{t}"
            text += (("-" if w < 0 else "") if not text else (" - " if w < 0 else " + ")) + body
        return text


def layers_of(terms) -> tuple[str, ...]:
    """The network taps a set of terms reads, in network order (image terms read none)."""
    needed = {t.layer for t in terms}
    return tuple(layer for layer in googlenet.LAYERS if layer in needed)


def as_objective(value) -> Objective:
    if isinstance(value, Objective):
        return value
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, Term.__args__):
        return Objective((value,), (1.0,))
    raise ObjectiveError(f"not an objective: {value!r}")


def _validate(term) -> None:
    if term.layer == INPUT:
        if isinstance(term, ImageNorm) and term.order not in (1, 2):
            raise ObjectiveError(f"image norms are of order 1 or 2, not {term.order}")
        return
    _check_layer(term.layer)
    if isinstance(term, (Channel, Neuron, ChannelProduct)):
        n = _channels(term.layer)
        picked = (term.channel, term.other) if isinstance(term, ChannelProduct) else (term.channel,)
        for bad in (c for c in picked if not 0 <= c < n):
            raise ObjectiveError(f"channel {bad} out of range for {term.layer} "
                                 f"(0..{n - 1})")
    if isinstance(term, Direction) and len(term.vector) != _channels(term.layer):
        raise ObjectiveError(f"direction needs {_channels(term.layer)} numbers for "
                             f"{term.layer}, got {len(term.vector)}")
    if isinstance(term, Neuron) and not (0 <= term.y <= 1 and 0 <= term.x <= 1):
        raise ObjectiveError(f"neuron position ({term.y}, {term.x}) must be fractions in [0, 1]")
    if isinstance(term, ClassLogit) and term.index < 0:
        raise ObjectiveError(f"class {term.index} out of range (classes count from 0)")
    if isinstance(term, (Channel, Neuron, Guide, ChannelProduct, Direction, Diversity)) \
            and term.layer in ("prob", CLASSIFIER):
        if not isinstance(term, (L2, Mean)):
            raise ObjectiveError(f"{term.layer} has no spatial channels; use class(K)")


def check_classes(objective: Objective, num_classes: int) -> None:
    """class(K) must name a class of the model in use (its classifier's width)."""
    for term in objective.terms:
        if isinstance(term, ClassLogit) and not 0 <= term.index < num_classes:
            raise ObjectiveError(f"class {term.index} out of range: this model has "
                                 f"{num_classes} classes (0..{num_classes - 1})")


# Constructors, lucid style.
def layer(name: str) -> Objective:
    """L2 of a layer: the original DeepDream objective."""
    return Objective((L2(name),), (1.0,))


def mean(name: str) -> Objective:
    return Objective((Mean(name),), (1.0,))


def channel(name: str, index: int) -> Objective:
    return Objective((Channel(name, int(index)),), (1.0,))


def neuron(name: str, index: int, y: float = 0.5, x: float = 0.5) -> Objective:
    return Objective((Neuron(name, int(index), float(y), float(x)),), (1.0,))


def channel_product(name: str, a: int, b: int) -> Objective:
    return Objective((ChannelProduct(name, int(a), int(b)),), (1.0,))


def direction(name: str, vector) -> Objective:
    """The vector has one number per channel (text form: its nonzero entries)."""
    return Objective((Direction(name, tuple(float(v) for v in np.ravel(vector))),), (1.0,))


def custom(fn, name: str, label: str = "custom") -> Objective:
    """Python API only: `fn(acts) -> scalar`, reading taps up to layer `name`."""
    if not callable(fn):
        raise ObjectiveError(f"custom objectives take a callable, not {fn!r}")
    return Objective((Custom(fn, name, label),), (1.0,))


def class_logit(index: int) -> Objective:
    return Objective((ClassLogit(int(index)),), (1.0,))


def guide(name: str) -> Objective:
    return Objective((Guide(name),), (1.0,))


def diversity(name: str) -> Objective:
    return Objective((Diversity(name),), (1.0,))


def tv() -> Objective:
    return Objective((TotalVariation(),), (1.0,))


def blur() -> Objective:
    return Objective((Blur(),), (1.0,))


def image_l1() -> Objective:
    return Objective((ImageNorm(1),), (1.0,))


def image_l2() -> Objective:
    return Objective((ImageNorm(2),), (1.0,))


def input_distance() -> Objective:
    return Objective((InputDistance(),), (1.0,))


DEFAULT = "inception_4c/output"

# --- the text form ---

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_TOKEN = re.compile(rf"\s*(?:(?P<num>{_NUMBER})|(?P<call>[a-z_0-9]+)\s*\((?P<args>[^()]*)\)"
                    rf"|(?P<name>[A-Za-z_][A-Za-z0-9_/]*)|(?P<op>[-+*]))")
_CALLS = {"l2": (layer, 1, 1), "mean": (mean, 1, 1), "channel": (channel, 2, 2),
          "neuron": (neuron, 2, 4), "class": (class_logit, 1, 1), "guide": (guide, 1, 1),
          "channel_product": (channel_product, 3, 3), "diversity": (diversity, 1, 1),
          "direction": (direction, 2, 100_000),
          "tv": (tv, 0, 0), "blur": (blur, 0, 0), "image_l1": (image_l1, 0, 0),
          "image_l2": (image_l2, 0, 0), "input_distance": (input_distance, 0, 0)}


def _number(text: str, what: str, integer: bool):
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise ObjectiveError(f"{what}: expected {'an integer' if integer else 'a number'}, "
                             f"got {text!r}") from None
    if not np.isfinite(value):
        raise ObjectiveError(f"{what}: {text!r} is not finite")
    return value


def _direction(layer: str, entries: list[str]) -> Objective:
    """direction(LAYER, C:W, ...): the unnamed channels weigh 0."""
    vector = np.zeros(_channels(layer))
    for entry in entries:
        channel, sep, weight = entry.partition(":")
        if not sep:
            raise ObjectiveError(f"direction(): expected CHANNEL:WEIGHT, got {entry!r}")
        c = _number(channel.strip(), "direction() channel", integer=True)
        if not 0 <= c < len(vector):
            raise ObjectiveError(f"channel {c} out of range for {layer} (0..{len(vector) - 1})")
        vector[c] += _number(weight.strip(), "direction() weight", integer=False)
    return direction(layer, vector)


def _call(name: str, args_text: str) -> Objective:
    if name not in _CALLS:
        raise ObjectiveError(f"unknown objective function {name!r}; known: {', '.join(_CALLS)}")
    make, low, high = _CALLS[name]
    args = [a.strip() for a in args_text.split(",")] if args_text.strip() else []
    if not low <= len(args) <= high:
        raise ObjectiveError(f"{name}() takes {low}{'' if low == high else f' to {high}'} "
                             f"argument(s), got {len(args)}")
    if name == "class":
        return make(_number(args[0], "class index", integer=True))
    if not args:
        return make()
    _check_layer(args[0])
    if name == "direction":
        return _direction(args[0], args[1:])
    rest = [_number(a, f"{name}() argument", integer=(i == 0 or name == "channel_product"))
            for i, a in enumerate(args[1:])]
    return make(args[0], *rest)


def parse(text: str) -> Objective:
    """Text form -> Objective; raises ObjectiveError with a one-line reason."""
    if not text or not text.strip():
        raise ObjectiveError("empty objective")
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ObjectiveError(f"cannot parse objective {text!r} at {text[pos:].strip()!r}")
        tokens.append(match)
        pos = match.end()
    result, pending, i = None, None, 0  # pending: the operator before the next term
    while i < len(tokens):
        tok = tokens[i]
        if tok["op"] in ("+", "-"):
            if pending is not None:
                raise ObjectiveError(f"objective {text!r}: two operators in a row")
            pending, i = tok["op"], i + 1
            continue
        if result is not None and pending is None:
            raise ObjectiveError(f"objective {text!r}: missing '+' or '-' between terms")
        scale = -1.0 if pending == "-" else 1.0
        if tok["num"] is not None:
            if i + 2 >= len(tokens) or tokens[i + 1]["op"] != "*":
                raise ObjectiveError(f"objective {text!r}: a number must be followed by '*' and a term")
            scale *= _number(tok["num"], "weight", integer=False)
            i += 2
            tok = tokens[i]
        if tok["call"] is not None:
            term = _call(tok["call"], tok["args"])
        elif tok["name"] is not None:
            term = layer(_check_layer(tok["name"]))
        else:
            raise ObjectiveError(f"objective {text!r}: unexpected {tok.group().strip()!r}")
        result = scale * term if result is None else result + scale * term
        pending, i = None, i + 1
    if result is None or pending is not None:
        raise ObjectiveError(f"objective {text!r} ends with an operator")
    return result


# --- evaluation ---

def union_terms(objectives) -> tuple:
    """The terms of several objectives, deduplicated, in first-seen order."""
    terms: list = []
    for objective in objectives:
        terms.extend(t for t in objective.terms if t not in terms)
    return tuple(terms)


def weight_matrix(objectives, terms: tuple) -> np.ndarray:
    """(M, T) weights of each objective over the shared terms (zero where absent)."""
    matrix = np.zeros((len(objectives), len(terms)), np.float32)
    for m, objective in enumerate(objectives):
        for w, t in zip(objective.weights, objective.terms):
            matrix[m, terms.index(t)] += w
    return matrix


def evaluate(terms: tuple, weights, acts: Mapping, data: Mapping):
    """sum_i weights[i] * terms[i](acts) for one image (acts without batch axis)."""
    return sum(weights[i] * term(acts, data) for i, term in enumerate(terms))


def evaluate_batch(terms: tuple, weights, acts: Mapping, data: Mapping):
    """(B,) values for a batch: weights (B, T), acts with a batch axis. Batch
    terms (diversity) see the whole batch; the others are evaluated per image.
    The gradient of the sum gives each image its own ascent direction."""
    per_image = tuple(t for t in terms if not getattr(t, "batch", False))
    index = [terms.index(t) for t in per_image]
    values = jax.vmap(lambda w, a: evaluate(per_image, w, a, data))(weights[:, index], acts) \
        if per_image else 0.0
    for i, term in enumerate(terms):
        if getattr(term, "batch", False):
            values = values + weights[:, i] * term.contributions(acts)
    return values
