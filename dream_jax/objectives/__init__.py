"""Composable dream objectives, in the spirit of lucid's `objectives`.

An `Objective` is a weighted sum of terms (`objectives.terms`); each term maps
the network's activations for one image to one scalar. Objectives compose with
`+`, `-` and scalar `*`:

    layer("inception_4c/output") + 0.5 * channel("inception_4d/3x3_reduce", 139)

Every registered term has a constructor here, made from the registry, and a
text form (`parse`, `str`; `grammar()` lists it). Python only: `custom(fn, LAYER)`
(a function has no text form).

What a compiled octave is specialised to is the objectives' *structure*
(`slots_of`: which kinds of terms, on which layers); the weights, and the
indices, positions and vectors inside the terms, are data (`bind`: a `Bindings`
pytree with a leading objective axis). So M objectives of one structure dream
in one call, and a new channel, neuron, class or weight reuses the program.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np
from jax import export

from dream_jax.model import DEFAULT as NET
from dream_jax.objectives import parser
from dream_jax.objectives.terms import (  # noqa: F401  (the terms, for `objectives.Channel`)
    L2, Blur, Channel, ChannelProduct, ClassLogit, Custom, Direction, Diversity, Guide, ImageL1,
    ImageL2, ImageTerm, InputDistance, Mean, Neuron, TotalVariation)
from dream_jax.objectives.registry import (CLASSIFIER, INPUT, MAX_TERMS, REFERENCE,  # noqa: F401
                                     REGISTRY, ObjectiveError, Term, check_float32,
                                     show_number)

DEFAULT = "inception_4c/output"


def _check_weights(terms, weights) -> tuple[float, ...]:
    if len(terms) > MAX_TERMS:
        raise ObjectiveError(f"an objective has at most {MAX_TERMS} terms, got {len(terms)}")
    if len(weights) != len(terms):
        raise ObjectiveError(f"{len(terms)} terms need as many weights, got {len(weights)}")
    return tuple(check_float32(float(w), "weight") for w in weights)


@dataclasses.dataclass(frozen=True)
class Objective:
    """sum_i weights[i] * terms[i](activations)."""
    terms: tuple = ()
    weights: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "weights", _check_weights(self.terms, self.weights))
        for term in self.terms:
            if not isinstance(term, Term):
                raise ObjectiveError(f"not an objective term: {term!r}")
            term.check()

    @classmethod
    def _of(cls, terms, weights) -> "Objective":
        """From terms already checked (the algebra): only the weights are checked."""
        objective = object.__new__(cls)
        object.__setattr__(objective, "terms", tuple(terms))
        object.__setattr__(objective, "weights", _check_weights(terms, weights))
        return objective

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
        return any(t.batch for t in self.terms)

    def __add__(self, other):
        other = as_objective(other)
        return Objective._of(self.terms + other.terms, self.weights + other.weights)

    def __sub__(self, other):
        return self + (-1.0) * as_objective(other)

    def __neg__(self):
        return (-1.0) * self

    def __mul__(self, scale):
        if not isinstance(scale, (int, float)) or not np.isfinite(scale):
            raise ObjectiveError(f"objectives scale by finite numbers, not {scale!r}")
        return Objective._of(self.terms, tuple(w * float(scale) for w in self.weights))

    __rmul__ = __mul__

    def __str__(self):
        parts = []
        for w, t in zip(self.weights, self.terms):
            body = str(t) if abs(w) == 1 else f"{show_number(abs(w))}*{t}"
            parts.append((("-" if w < 0 else "") if not parts else (" - " if w < 0 else " + "))
                         + body)
        return "".join(parts)


def _constructor(cls):
    def make(*args, **kwargs) -> Objective:
        return Objective((cls.create(*args, **kwargs),), (1.0,))
    make.__name__ = make.__qualname__ = cls.python
    make.__doc__ = f"`{cls.signature()}`: {cls.help}."
    return make


# layer, mean, channel, neuron, class_logit, guide, channel_product, direction,
# diversity, tv, blur, image_l1, image_l2, input_distance: one per registered term.
globals().update({cls.python: _constructor(cls) for cls in REGISTRY.values()})


def custom(fn, name: str, label: str = "custom") -> Objective:
    """Python API only: `fn(acts) -> scalar`, reading taps up to layer `name`."""
    if not callable(fn):
        raise ObjectiveError(f"custom objectives take a callable, not {fn!r}")
    return Objective((Custom(fn, name, label),), (1.0,))


def parse(text: str) -> Objective:
    """Text form -> Objective; raises ObjectiveError with a one-line reason."""
    terms, weights = parser.parse(text)
    return Objective(tuple(terms), tuple(weights))


def grammar() -> list[tuple[str, str]]:
    """(signature, help) of every term of the text form (a bare LAYER is l2(LAYER))."""
    return [(cls.signature(), cls.help) for cls in REGISTRY.values()]


def help_table() -> str:
    """The term table of README's Objectives section, from the registry."""
    rows = [(signature, text.replace("|", "\\|")) for signature, text in grammar()]
    return "\n".join(["| term | meaning |", "|---|---|"]
                     + [f"| `{signature}` | {text} |" for signature, text in rows])


def as_objective(value) -> Objective:
    if isinstance(value, Objective):
        return value
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, Term):
        return Objective((value,), (1.0,))
    raise ObjectiveError(f"not an objective: {value!r}")


def layers_of(terms) -> tuple[str, ...]:
    """The network taps a set of terms reads, in network order (image terms read none)."""
    needed = {t.layer for t in terms}
    return NET.in_order(needed)


def check_classes(objective: Objective, num_classes: int) -> None:
    """class(K) must name a class of the model in use (its classifier's width)."""
    for term in objective.terms:
        if isinstance(term, ClassLogit) and not 0 <= term.index < num_classes:
            raise ObjectiveError(f"class {term.index} out of range: this model has "
                                 f"{num_classes} classes (0..{num_classes - 1})")


def union_terms(objectives) -> tuple:
    """The terms of several objectives, deduplicated, in first-seen order."""
    return tuple(dict.fromkeys(t for objective in objectives for t in objective.terms))


def weight_matrix(objectives, terms: tuple) -> np.ndarray:
    """(M, T) weights of each objective over the shared terms (zero where absent):
    for evaluating the terms themselves, their indices static."""
    column = {t: i for i, t in enumerate(terms)}
    matrix = np.zeros((len(objectives), len(terms)), np.float32)
    for m, objective in enumerate(objectives):
        for w, t in zip(objective.weights, objective.terms):
            matrix[m, column[t]] += w
    return matrix


# --- structure and data: what compiles, and what is passed in ---

class Bindings(NamedTuple):
    """What objectives of one structure differ in, with leading axes (objectives,
    ...): the weights (..., T), and each slot's data fields {name: (..., *shape)}."""
    weights: Any
    values: tuple


export.register_namedtuple_serialization(Bindings, serialized_name="dream_jax.Bindings")


def _slotted(objective):
    """(slot key, term, weight) per distinct term (identical terms' weights summed);
    the key is (structure, k): the k-th term of that structure in the objective."""
    merged: dict = {}
    for w, t in zip(objective.weights, objective.terms):
        merged[t] = merged.get(t, 0.0) + w
    seen: collections.Counter = collections.Counter()
    for term, w in merged.items():
        structure = term.structure()
        yield (structure, seen[structure]), term, w
        seen[structure] += 1


def slots_of(objectives) -> tuple[Term, ...]:
    """The structure objectives share: one slot (a term with its data blank) per
    term, as many of each kind as one objective uses, in first-seen order."""
    keys: dict = {}
    for objective in objectives:
        for key, _, _ in _slotted(objective):
            keys.setdefault(key, len(keys))
    return tuple(structure for structure, _ in keys)


def bind(objectives, slots: tuple) -> Bindings:
    """Each objective's weights and data over `slots` (an absent term weighs 0)."""
    column, count = {}, collections.Counter()
    for i, slot in enumerate(slots):
        column[(slot, count[slot])] = i
        count[slot] += 1
    weights = np.zeros((len(objectives), len(slots)), np.float32)
    values = [[slot.arrays(blank=True)] * len(objectives) for slot in slots]
    for m, objective in enumerate(objectives):
        for key, term, w in _slotted(objective):
            weights[m, column[key]] = check_float32(w, f"{term}: summed weight")
            values[column[key]][m] = term.arrays()
    return Bindings(weights, tuple({name: np.stack([v[name] for v in rows])
                                    for name in slot.data_fields()}
                                   for slot, rows in zip(slots, values)))


def stack(bindings: list[Bindings]) -> Bindings:
    """Several Bindings of one shape -> one, with a new leading axis (items of K regions)."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *bindings)


def _bound(terms, weights):
    """Terms with their data filled in, and the weights: `weights` is Bindings for
    slots, or a plain weight array for terms whose indices are static."""
    if isinstance(weights, Bindings):
        return tuple(t.fill(v) for t, v in zip(terms, weights.values)), weights.weights
    return terms, weights


def _subset(weights, index: list[int]):
    if isinstance(weights, Bindings):
        return Bindings(weights.weights[:, index], tuple(weights.values[i] for i in index))
    return weights[:, index]


def evaluate(terms: tuple, weights, acts: Mapping, data: Mapping):
    """sum_i weights[i] * terms[i](acts) for one image (acts without batch axis)."""
    terms, weights = _bound(terms, weights)
    return sum(weights[i] * term(acts, data) for i, term in enumerate(terms))


def evaluate_batch(terms: tuple, weights, acts: Mapping, data: Mapping):
    """(B,) values for a batch: weights (B, T) or Bindings, acts with a batch axis.
    Batch terms (diversity) see the whole batch; the others are evaluated per image.
    The gradient of the sum gives each image its own ascent direction."""
    index = [i for i, t in enumerate(terms) if not t.batch]
    per_image = tuple(terms[i] for i in index)
    values = jax.vmap(lambda w, a: evaluate(per_image, w, a, data))(
        _subset(weights, index), acts) if per_image else 0.0
    matrix = weights.weights if isinstance(weights, Bindings) else weights
    for i, term in enumerate(terms):
        if term.batch:
            values = values + matrix[:, i] * term.contributions(acts)
    return values
