"""How an objective term is defined: once, with `@term`.

A term maps one image's activations to one scalar (the terms themselves are in
`objectives.terms`). `@term(name, help)` makes a class a frozen dataclass and
registers it: from the registry come the text grammar's entry
(`objectives.parser`), the Python constructor (`objectives`) and the help line
(flags, README). Its fields say what kind of value they hold (`layer_arg()`,
`channel_arg()`, `fraction_arg()`, `class_index_arg()`, `vector_arg()`), and so
how the text form reads and prints them, how they are checked, and whether
they are *structure* or *data*:

    structure  the kind of term and its layer: static to jit, it shapes the program;
    data       channel and class indices, positions, vectors: they only select or
               weigh inside an activation, so they travel into the compiled octave
               as arrays, and a new channel, neuron or class reuses the program.

`term.structure()` is the term with its data blank (None), `term.arrays()` its
data as numpy arrays, and `structure.fill(arrays)` the term again with (traced)
data. A term is `separable` when it is a mean over map positions of something
each position computes alone: then a tiled gradient equals the whole image's.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from dream_jax.model import DEFAULT as NET
from dream_jax.errors import UserError

CLASSIFIER = NET.classifier_layer
INPUT = "input"          # acts[INPUT]: the image, model space (BGR levels minus the mean)
REFERENCE = "reference"  # acts[REFERENCE]: the image the dream started from, same units
INT32_MAX = 2**31 - 1    # indices travel as int32
MAX_TERMS = 1000         # per objective: a bound on the program an objective makes
FLOAT32_MAX, FLOAT32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
REGISTRY: dict[str, type] = {}  # grammar name -> term class, in definition order


class ObjectiveError(UserError, ValueError):
    """An objective that names an unknown layer, a bad channel or bad syntax."""


def check_layer(layer: str) -> str:
    if layer not in NET.layers:
        close = difflib.get_close_matches(layer, NET.layers, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ObjectiveError(f"unknown layer {layer!r}; {hint}valid layers: "
                             f"{', '.join(NET.layers)}")
    return layer


def channels(layer: str) -> int:
    return NET.channels(layer)


def integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ObjectiveError(f"{what}: expected an integer, got {text[:40]!r}") from None


def number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ObjectiveError(f"{what}: expected a number, got {text[:40]!r}") from None
    if not np.isfinite(value):
        raise ObjectiveError(f"{what}: {text[:40]!r} is not finite")
    return value


def check_float32(value: float, what: str) -> float:
    """A weight must survive the float32 it is computed in: not overflow, not vanish."""
    if not abs(value) <= FLOAT32_MAX:
        raise ObjectiveError(f"{what} {value:g} is outside float32's range "
                             f"(|w| <= {FLOAT32_MAX:g})")
    if value and abs(value) < FLOAT32_TINY:
        raise ObjectiveError(f"{what} {value:g} underflows float32 (|w| >= {FLOAT32_TINY:g}, or 0)")
    return value


def show_number(value: float) -> str:
    """The shortest text that reads back as exactly `value`."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _as_int(value) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ObjectiveError(f"expected an integer, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Arg:
    """What a field holds: how the text form reads (`read(text, what)`) and shows
    it, how a Python value is stored (`coerce`), its check `(term, value)`, and
    for data, the dtype it travels in and the value an absent term carries."""
    text: str
    read: Callable[[str, str], Any]
    coerce: Callable[[Any], Any]
    check: Callable[[Any, Any], None] = lambda term, value: None
    dtype: Any = None  # None: structure
    blank: Callable[[Any], Any] = lambda term: 0
    show: Callable[[Any], str] = str


def _field(arg: Arg, default=dataclasses.MISSING):
    return dataclasses.field(default=default, metadata={"arg": arg})


def _check_channel(term, value):
    n = channels(term.layer)
    if not 0 <= value < n:
        raise ObjectiveError(f"channel {value} out of range for {term.layer} (0..{n - 1})")


def _check_class(term, value):
    if not 0 <= value <= INT32_MAX:
        raise ObjectiveError(f"class {value} out of range (classes count from 0)")


def _check_fraction(term, value):
    if not 0 <= value <= 1:
        raise ObjectiveError(f"{term.name} position {value!r}: positions are fractions in [0, 1]")


def _check_vector(term, value):
    if len(value) != channels(term.layer):
        raise ObjectiveError(f"direction needs {channels(term.layer)} numbers for "
                             f"{term.layer}, got {len(value)}")
    for w in value:
        check_float32(w, "direction weight")


def layer_arg():
    """A network tap (structure)."""
    return _field(Arg("LAYER", lambda text, what: check_layer(text), str))


def channel_arg(text: str = "C"):
    return _field(Arg(text, integer, _as_int, _check_channel, jnp.int32))


def class_index_arg():
    return _field(Arg("K", integer, _as_int, _check_class, jnp.int32))


def fraction_arg(text: str):
    """A position along one side of the map: 0 is the first row/column, 1 the last."""
    return _field(Arg(text, number, float, _check_fraction, jnp.float32, show=show_number),
                  default=0.5)


def vector_arg():
    """One weight per channel of the term's layer; the text form names the nonzero ones."""
    return _field(Arg("C:W, ...", None, lambda v: tuple(float(w) for w in np.ravel(v)),
                      _check_vector, jnp.float32, lambda term: np.zeros(channels(term.layer))))


class Term:
    """Base of every term: the generic text form, checks and data plumbing."""
    name = help = ""
    separable = True   # see the module docstring
    batch = False      # compares the images of a batch (`contributions`)
    spatial = True     # reads channels of a map: the classifier has none

    @classmethod
    def args(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if "arg" in f.metadata]

    @classmethod
    def signature(cls) -> str:
        """The grammar entry, e.g. `neuron(LAYER, C[, Y, X])`."""
        parts = [f.metadata["arg"].text for f in cls.args()]
        required = [f for f in cls.args() if f.default is dataclasses.MISSING]
        optional = parts[len(required):]
        head = ", ".join(parts[:len(required)])
        return f"{cls.name}({head}{'[, ' + ', '.join(optional) + ']' if optional else ''})"

    @classmethod
    def create(cls, *values, **named) -> "Term":
        """From Python values (coerced to the stored types) or keywords."""
        bound = dict(zip([f.name for f in dataclasses.fields(cls)], values)) | named
        fields = {f.name: f for f in dataclasses.fields(cls)}
        return cls(**{k: (fields[k].metadata["arg"].coerce(v) if "arg" in fields[k].metadata
                          else v) for k, v in bound.items()})

    @classmethod
    def from_text(cls, texts: list[str]) -> "Term":
        args = cls.args()
        low = sum(f.default is dataclasses.MISSING for f in args)
        if not low <= len(texts) <= len(args):
            count = low if low == len(args) else f"{low} to {len(args)}"
            raise ObjectiveError(f"{cls.name}() takes {count} argument(s), got {len(texts)}")
        return cls(**{f.name: f.metadata["arg"].read(text, f"{cls.name}() argument")
                      for f, text in zip(args, texts)})

    def check(self) -> None:
        """Raises ObjectiveError with a one-line reason."""
        if self.layer in (INPUT, REFERENCE):
            return
        check_layer(self.layer)
        if self.spatial and self.layer in ("prob", CLASSIFIER):
            raise ObjectiveError(f"{self.layer} has no spatial channels; use class(K)")
        for f in self.args():
            f.metadata["arg"].check(self, getattr(self, f.name))

    @classmethod
    def data_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.args() if f.metadata["arg"].dtype is not None)

    def structure(self) -> "Term":
        """This term with its data blank: what a compiled program is specialised to."""
        return dataclasses.replace(self, **dict.fromkeys(self.data_fields()))

    def arrays(self, blank: bool = False) -> dict[str, np.ndarray]:
        """The data fields as arrays (`blank`: the values an absent term carries)."""
        args = {f.name: f.metadata["arg"] for f in self.args()}
        return {name: np.asarray(args[name].blank(self) if blank else getattr(self, name),
                                 args[name].dtype) for name in self.data_fields()}

    def fill(self, arrays) -> "Term":
        return dataclasses.replace(self, **arrays) if arrays else self

    def __str__(self):
        args = self.args()
        while args and args[-1].default is not dataclasses.MISSING \
                and getattr(self, args[-1].name) == args[-1].default:
            args = args[:-1]
        shown = (f.metadata["arg"].show(getattr(self, f.name)) for f in args)
        return f"{self.name}({','.join(shown)})"


def term(name: str, help: str, python: str = ""):
    """Register a term class under its grammar `name`; `python` names its
    constructor in `objectives` (default: the same)."""
    def register(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        cls.name, cls.help, cls.python = name, help, python or name
        REGISTRY[name] = cls
        return cls
    return register


def position(fraction, n: int):
    """Row (or column) of a map of side n at `fraction` of the way along it."""
    if isinstance(fraction, (int, float)):
        return min(int(fraction * n), n - 1)
    return jnp.minimum(jnp.floor(fraction * n).astype(jnp.int32), n - 1)
